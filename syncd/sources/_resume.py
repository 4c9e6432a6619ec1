"""What a content sync's cookies go with, as bytes the store keeps beside them, so that a new process continues it.

A content sync (RFC 4533 or DirSync) continues from a cookie only with the directory index and the entryUUID ->
external id maps that were current at that cookie. A *base* holds them whole (written when a content sync starts);
a *delta* holds what one change-based pull changed in them (a few entries, and of a changed group only the member
keys it gained and lost). The store keeps the base and the deltas recorded after it, each in the transaction of its
snapshot, so they always go with the cookies it holds; `restore` replays them. Each carries the cookies it goes
with and a fingerprint of the settings that shape the index: a restore that does not end on the stored cookies, or
was made under other settings, is refused (the caller then does a full pull).

Encoding: zlib-compressed lines of JSON, written piece by piece (the base of 100,000 users is never one string in
memory). In a base, a group's member keys that are a user's or a group's key are written as that entry's position.
Purely computational, no I/O.
"""

from __future__ import annotations

import base64
import itertools
import json
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from syncd.sources._content import SyncSession
from syncd.sources._ldap_graph import DirectoryIndex, GroupRecord, IndexChanges

__all__ = ["Restored", "ResumeError", "encode_base", "encode_delta", "restore"]

T = TypeVar("T")
_VERSION = 1
_CHUNK = 5_000


class ResumeError(ValueError):
    """Stored content sync state that cannot be used: unreadable, of other settings, or not of the stored cookies."""


@dataclass(slots=True)
class Restored:
    """A content sync rebuilt from the store: each session (cookie and entries), the index, and the size of the
    deltas replayed (when they outweigh the base, the next pull writes a new base)."""

    sessions: dict[str, SyncSession]
    index: DirectoryIndex
    base_size: int = 0
    delta_size: int = 0
    deltas: int = 0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cookies(sessions: Mapping[str, SyncSession]) -> dict[str, str | None]:
    return {name: _b64(s.cookie) if s.cookie else None for name, s in sorted(sessions.items())}


def _chunks(items: Iterable[T]) -> Iterator[list[T]]:
    """The items in lists of _CHUNK (never all of them in one list)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, _CHUNK)):
        yield chunk


def _compressed(lines: Iterator[Any]) -> bytes:
    packer = zlib.compressobj(1)
    parts = [packer.compress(json.dumps(line, separators=(",", ":")).encode() + b"\n") for line in lines]
    parts.append(packer.flush())
    return b"".join(parts)


def encode_base(sessions: Mapping[str, SyncSession], index: DirectoryIndex, fingerprint: str) -> bytes:
    """The whole content sync state, to continue from its cookies."""
    return _compressed(_base_lines(sessions, index, fingerprint))


def _base_lines(sessions: Mapping[str, SyncSession], index: DirectoryIndex, fingerprint: str) -> Iterator[Any]:
    yield {"v": _VERSION, "kind": "base", "fingerprint": fingerprint, "cookies": _cookies(sessions)}
    for name, session in sorted(sessions.items()):
        for chunk in _chunks(session.entries.items()):
            yield {"s": name, "uuids": _b64(b"".join(uuid for uuid, _ in chunk)), "ids": [e for _, e in chunk]}
    owners = index.user_by_key
    for part in _chunks(index.users.items()):
        yield {"U": [[e, key, int(emitted), int(owners.get(key) == e)] for e, (key, emitted) in part]}
    position = {key: n for n, (e, (key, _)) in enumerate(index.users.items()) if owners.get(key) == e}
    for number, record in enumerate(index.groups.values()):
        position.setdefault(record.dn_key, len(index.users) + number)
    for record in index.groups.values():
        members = [position.get(key, key) for key in record.member_keys]
        owner = int(index.group_by_dn.get(record.dn_key) == record.external_id)
        yield {"G": [record.external_id, record.name, record.dn, record.dn_key, dict(record.grant), members, owner]}


def encode_delta(sessions: Mapping[str, SyncSession], index: DirectoryIndex, changes: IndexChanges) -> bytes:
    """What one pull changed in the sessions and the index (tracked in `changes`), and the cookies after it."""
    return _compressed(_delta_lines(sessions, index, changes))


def _delta_lines(sessions: Mapping[str, SyncSession], index: DirectoryIndex, changes: IndexChanges) -> Iterator[Any]:
    yield {"v": _VERSION, "kind": "delta", "cookies": _cookies(sessions)}
    for name, session in sorted(sessions.items()):
        put = [[_b64(uuid), session.entries[uuid]] for uuid in session.changed if uuid in session.entries]
        dropped = [_b64(uuid) for uuid in session.changed if uuid not in session.entries]
        if put or dropped:
            yield {"s": name, "put": put, "drop": dropped}
    users = [[e, index.users[e][0], int(index.users[e][1])] for e in changes.users if e in index.users]
    gone = [e for e in changes.users if e not in index.users]
    if users or gone:
        yield {"U": users, "drop": gone}
    for external_id, before in changes.groups.items():
        after = index.groups.get(external_id)
        if after is None:
            yield {"Gdrop": external_id}
            continue
        head = [after.external_id, after.name, after.dn, after.dn_key, dict(after.grant)]
        if before is None:
            yield {"G": [*head, sorted(after.member_keys)]}
        else:
            added, removed = after.member_keys - before.member_keys, before.member_keys - after.member_keys
            yield {"Gdiff": [*head, sorted(added), sorted(removed)]}
    if changes.user_keys or changes.dn_keys:  # last: after the puts and drops above
        yield {
            "owners": {key: index.user_by_key.get(key) for key in changes.user_keys},
            "dn_owners": {key: index.group_by_dn.get(key) for key in changes.dn_keys},
        }


def _lines(body: bytes) -> Iterator[dict[str, Any]]:
    """The JSON lines of a body, decompressed piece by piece (a base is never whole in memory as text)."""
    unpacker, rest = zlib.decompressobj(), b""
    try:
        for start in range(0, len(body), 1 << 16):
            rest += unpacker.decompress(body[start : start + (1 << 16)])
            *lines, rest = rest.split(b"\n")
            yield from map(_line, lines)
        rest += unpacker.flush()
    except zlib.error as exc:
        raise ResumeError(f"unreadable ({exc})") from None
    if not unpacker.eof:
        raise ResumeError("unreadable (truncated)")
    yield from map(_line, filter(None, rest.split(b"\n")))


def _line(text: bytes) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ResumeError(f"unreadable ({exc})") from None
    if not isinstance(value, dict):
        raise ResumeError("unreadable (not a JSON object)")
    return value


def restore(bodies: list[bytes], fingerprint: str, cookies: Mapping[str, bytes]) -> Restored:
    """The content sync rebuilt from a base and its deltas; ResumeError unless it ends on `cookies` under the same
    settings (`fingerprint`)."""
    if not bodies:
        raise ResumeError("no stored index")
    restored = Restored({}, DirectoryIndex(), base_size=len(bodies[0]))
    header = _apply(restored, bodies[0], base=True)
    if header.get("fingerprint") != fingerprint:
        raise ResumeError("stored under other settings")
    for body in bodies[1:]:
        header = _apply(restored, body, base=False)
        restored.delta_size += len(body)
        restored.deltas += 1
    try:
        last = {name: base64.b64decode(value) for name, value in (header.get("cookies") or {}).items() if value}
    except (ValueError, TypeError) as exc:
        raise ResumeError(f"unreadable cookies ({exc})") from None
    if last != dict(cookies) or set(restored.sessions) != set(header.get("cookies") or {}):
        raise ResumeError("it does not go with the stored cookies")
    for name, session in restored.sessions.items():
        session.cookie = last.get(name)
    return restored


def _apply(restored: Restored, body: bytes, *, base: bool) -> dict[str, Any]:
    lines = _lines(body)
    header = next(lines, None)
    if header is None or header.get("v") != _VERSION or header.get("kind") != ("base" if base else "delta"):
        raise ResumeError("not a stored index of this version")
    for name in header.get("cookies") or {}:
        restored.sessions.setdefault(name, SyncSession())
    try:
        if base:
            _apply_base(restored, lines)
        else:
            _apply_delta(restored, lines)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ResumeError(f"malformed ({type(exc).__name__}: {exc})") from None
    return header


def _apply_base(restored: Restored, lines: Iterator[dict[str, Any]]) -> None:
    index, keys = restored.index, []
    groups: list[list[Any]] = []
    for line in lines:
        if "s" in line:
            uuids = base64.b64decode(line["uuids"])
            entries = restored.sessions[line["s"]].entries
            for number, external_id in enumerate(line["ids"]):
                entries[uuids[number * 16 : number * 16 + 16]] = str(external_id)
        elif "U" in line:
            for external_id, key, emitted, owner in line["U"]:
                key = sys.intern(key)
                keys.append(key)
                index.users[external_id] = (key, bool(emitted))
                if not emitted:
                    index.silent.add(external_id)
                if owner:
                    index.user_by_key[key] = external_id
        elif "G" in line:
            groups.append(line["G"])
            keys.append(sys.intern(line["G"][3]))
    for external_id, name, dn, dn_key, grant, members, owner in groups:
        dn_key = sys.intern(dn_key)
        member_keys = frozenset(keys[m] if isinstance(m, int) else sys.intern(m) for m in members)
        index.groups[external_id] = GroupRecord(external_id, name, dn, dn_key, member_keys, grant)
        if owner:
            index.group_by_dn[dn_key] = external_id


def _apply_delta(restored: Restored, lines: Iterator[dict[str, Any]]) -> None:
    index = restored.index
    for line in lines:
        if "s" in line:
            entries = restored.sessions[line["s"]].entries
            for uuid, external_id in line["put"]:
                entries[base64.b64decode(uuid)] = str(external_id)
            for uuid in line["drop"]:
                entries.pop(base64.b64decode(uuid), None)
        elif "U" in line:
            for external_id, key, emitted in line["U"]:
                index.put_user(external_id, sys.intern(key), bool(emitted))
            for external_id in line["drop"]:
                index.drop_user(external_id)
        elif "owners" in line:
            _set_owners(index.user_by_key, line["owners"])
            _set_owners(index.group_by_dn, line["dn_owners"])
        elif "Gdrop" in line:
            index.drop_group(line["Gdrop"])
        elif "G" in line:
            external_id, name, dn, dn_key, grant, members = line["G"]
            keys = frozenset(sys.intern(key) for key in members)
            index.put_group(GroupRecord(external_id, name, dn, sys.intern(dn_key), keys, grant))
        elif "Gdiff" in line:
            external_id, name, dn, dn_key, grant, added, removed = line["Gdiff"]
            before = index.groups[external_id]
            keys = frozenset((before.member_keys - set(removed)) | {sys.intern(key) for key in added})
            index.put_group(GroupRecord(external_id, name, dn, sys.intern(dn_key), keys, grant))


def _set_owners(owners: dict[str, str], found: Mapping[str, str | None]) -> None:
    """Which entry each key names after a delta (None: none), as the index that wrote it had it."""
    for key, owner in found.items():
        if owner is None:
            owners.pop(key, None)
        else:
            owners[sys.intern(key)] = owner
