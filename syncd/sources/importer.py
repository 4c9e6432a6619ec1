"""A file source: people and groups from a JSON or CSV file (`syncd import`), recorded as a full snapshot.

JSON: `{"source": "hr", "users": [{"id", "user_id", "email", "name", "active"}], "groups": [{"id", "name", "dn",
"members": [user ids]}]}` where `members` lists the users' `id` (default: their user_id).
CSV: a header with `user_id,email` and optionally `name,active,groups,id`; `groups` holds group names separated by
`;`. A file with any bad row is refused whole, naming each problem; nothing is recorded from it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from syncd.model import Group, Identity, Snapshot

__all__ = ["ImportFileError", "read_import_file"]

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


class ImportFileError(Exception):
    """The file cannot be imported; `problems` names each bad entry."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__(f"{path}: cannot import:\n  " + "\n  ".join(shown))


def read_import_file(path: str | Path, *, source: str | None = None) -> Snapshot:
    """Read a JSON or CSV file into a complete snapshot of `source` (the file's own, else 'import')."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ImportFileError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            str(path), [f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"]
        ) from None
    if path.suffix.lower() == ".csv":
        name = source or "import"
        users, groups = _from_csv(text, str(path))
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFileError(str(path), [f"line {exc.lineno}: not valid JSON ({exc.msg})"]) from None
        if not isinstance(data, dict):
            raise ImportFileError(str(path), ["the top level must be an object with users and groups"])
        name = source or str(data.get("source") or "import")
        users, groups = data.get("users") or [], data.get("groups") or []
        wrong = [
            f"{key} must be a list"
            for key, value in (("users", users), ("groups", groups))
            if not isinstance(value, list)
        ]
        if wrong:
            raise ImportFileError(str(path), wrong)
    else:
        raise ImportFileError(str(path), ["the file name must end in .json or .csv"])
    return _snapshot(name, users, groups, str(path))


def _from_csv(text: str, where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    missing = {"user_id", "email"} - set(reader.fieldnames or ())
    if missing:
        raise ImportFileError(where, [f"the header lacks column(s): {', '.join(sorted(missing))}"])
    users: list[dict[str, Any]] = []
    members: dict[str, list[str]] = {}
    for row in reader:
        user = {key: (value or "").strip() for key, value in row.items() if key}
        user["_line"] = reader.line_num
        users.append(user)
        for group in filter(None, (g.strip() for g in user.pop("groups", "").split(";"))):
            members.setdefault(group, []).append(user.get("id") or user["user_id"])
    return users, [{"id": name, "name": name, "members": ids} for name, ids in members.items()]


def _snapshot(source: str, users: Iterable[Any], groups: Iterable[Any], where: str) -> Snapshot:
    problems: list[str] = []
    identities = [i for n, u in enumerate(users) if (i := _identity(source, u, n, problems)) is not None]
    known = {i.external_id for i in identities}
    seen_ids: set[str] = set()
    for identity in identities:
        if identity.user_id in seen_ids:
            problems.append(f"user_id {identity.user_id!r} appears twice")
        seen_ids.add(identity.user_id)
    teams = [g for n, raw in enumerate(groups) if (g := _group(source, raw, n, known, problems)) is not None]
    if problems:
        raise ImportFileError(where, problems)
    return Snapshot(source, identities, teams, complete=True, counters={"users": len(identities)})


def _identity(source: str, raw: Any, index: int, problems: list[str]) -> Identity | None:
    where = f"line {raw['_line']}" if isinstance(raw, Mapping) and "_line" in raw else f"users[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be an object")
        return None
    user_id, email = str(raw.get("user_id") or "").strip(), str(raw.get("email") or "").strip()
    if not user_id:
        problems.append(f"{where}: user_id is missing")
    if not email or "@" not in email:
        problems.append(f"{where}: email {email!r} is missing or not an address")
    active = _bool(raw.get("active", True))
    if active is None:
        problems.append(f"{where}: active {raw.get('active')!r} is not true or false")
    if not user_id or not email or "@" not in email or active is None:
        return None
    return Identity(source, str(raw.get("id") or user_id), user_id, email, str(raw.get("name") or "") or None, active)


def _group(source: str, raw: Any, index: int, known: set[str], problems: list[str]) -> Group | None:
    if not isinstance(raw, Mapping) or not raw.get("name"):
        problems.append(f"groups[{index}]: must be an object with a name")
        return None
    raw_members = raw.get("members") or []
    if not isinstance(raw_members, list):
        problems.append(f"groups[{index}] ({raw['name']}): members must be a list")
        return None
    members = [str(m) for m in raw_members]
    unknown = [m for m in members if m not in known]
    if unknown:
        problems.append(f"groups[{index}] ({raw['name']}): unknown member(s): {', '.join(unknown[:5])}")
    name = str(raw["name"])
    return Group(source, str(raw.get("id") or name), name, raw.get("dn"), frozenset(members))


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None
