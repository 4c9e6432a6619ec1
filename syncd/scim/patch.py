"""PATCH (RFC 7644 §3.5.2) as Okta and Entra ID send it.

Every operation is smoothed over first (Okta repeats id, meta and schemas in a path-less value; Entra sends a
manager as a bare id, `$ref: null`, capitalised ops and "False" as a string), then applied by scim2-models under
`POLICY` (value-path filters, an `Add` to `emails[type eq "work"].value` that creates the entry, a `Remove` of
members with a value list). The commonest requests, which only set or remove plain attributes (`active`, `title`,
`displayName`, an enterprise attribute), are applied straight to the stored JSON: the same result without building
the resource model twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, InvalidValueException, PatchOp, SCIMException

from syncd.scim.resources import manager_value, tolerate, validation_error
from syncd.scim.schemas import ENTERPRISE, POLICY, Attribute, ResourceKind

__all__ = [
    "MAX_OPERATIONS",
    "Patch",
    "apply_member_operations",
    "apply_to_model",
    "apply_to_stored",
    "parse_patch",
    "split_member_operations",
    "validated_patch",
]

_READ_ONLY_KEYS = {"id", "meta", "schemas", "groups"}
#: the most operations one PATCH may carry (a 1 MiB body holds about 17,000 member removes)
MAX_OPERATIONS = 20_000
_PLAIN_PATH = re.compile(r"(?:(urn:[A-Za-z0-9:._-]+):)?([A-Za-z][A-Za-z0-9_-]*)")
_PLAIN_TYPES = {"string", "boolean", "integer", "decimal", "reference"}
_MEMBERS = {"members", "urn:ietf:params:scim:schemas:core:2.0:group:members"}
_MEMBER_EQ = re.compile(
    r'\s*(?:urn:ietf:params:scim:schemas:core:2\.0:group:)?members\s*\[\s*value\s+eq\s+("(?:[^"\\]|\\.)*")\s*\]\s*',
    re.IGNORECASE,
)
#: a member operation as set arithmetic: ("add" | "remove" | "replace", [(value, display)])
MemberOperation = tuple[str, list[tuple[str, str | None]]]


@dataclass(frozen=True, slots=True)
class _Change:
    """Set (value) or remove (value None) one plain attribute."""

    attribute: Attribute
    extension: str | None
    value: Any


@dataclass(frozen=True, slots=True)
class Patch:
    """A PATCH request: its operations, and the plain changes they amount to when they are that simple."""

    operations: tuple[dict[str, Any], ...]
    simple: tuple[_Change, ...] | None
    validated: Any = None  # the scim2-models PatchOp, when the operations are not all plain


def parse_patch(kind: ResourceKind, payload: Any, base_url: str, *, plain_first: bool = True) -> Patch:
    """The operations of a PatchOp body, smoothed over; invalidValue when it holds none.

    `plain_first`: find the plain changes and validate the rest through the models now; False: neither (the caller
    splits the operations itself, and `apply_to_model` validates what it is given)."""
    if not isinstance(payload, dict):
        raise InvalidValueException(detail="the body must be a PatchOp object")
    operations = next((value for key, value in payload.items() if key.lower() == "operations"), None)
    if not isinstance(operations, list) or not operations:
        raise InvalidValueException(detail="Operations must list one or more operations")
    if len(operations) > MAX_OPERATIONS:
        raise InvalidValueException(detail=f"{len(operations)} operations, over {MAX_OPERATIONS}: split the PATCH")
    cleaned = tuple(_operation(op, base_url) for op in operations)
    if not plain_first:
        return Patch(cleaned, None)
    simple = _simple_changes(kind, cleaned)
    return Patch(cleaned, simple, None if simple is not None else validated_patch(kind, cleaned))


def validated_patch(kind: ResourceKind, operations: tuple[dict[str, Any], ...]) -> Any:
    """The scim2-models PatchOp: its errors are the request's (before any resource is read)."""
    message = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": list(operations)}
    try:
        return PatchOp[kind.model].model_validate(  # type: ignore[name-defined]
            message, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY
        )
    except ValidationError as exc:
        raise validation_error(exc) from None


def _operation(operation: Any, base_url: str) -> dict[str, Any]:
    if not isinstance(operation, dict):
        raise InvalidValueException(detail="each operation must be an object")
    operation = {key.lower(): value for key, value in operation.items()}
    value = operation.get("value")
    if isinstance(value, dict) and not operation.get("path"):
        # a path-less add/replace: Okta repeats read-only attributes (id, meta, schemas) in the value
        value = {key: item for key, item in value.items() if key.lower() not in _READ_ONLY_KEYS}
    if "value" in operation and value is not None:
        operation["value"] = tolerate(value, base_url)
    path = str(operation.get("path") or "")
    if path.lower().endswith(":manager") and "value" in operation:
        operation["value"] = manager_value(operation["value"], base_url)
    return operation


# --- plain changes -------------------------------------------------------------------------------------------------


def _simple_changes(kind: ResourceKind, operations: tuple[dict[str, Any], ...]) -> tuple[_Change, ...] | None:
    changes: list[_Change] = []
    for operation in operations:
        found = _plain(kind, operation)
        if found is None:
            return None
        changes.extend(found)
    return tuple(changes)


def _plain(kind: ResourceKind, operation: dict[str, Any]) -> list[_Change] | None:
    op, path, value = str(operation.get("op", "")).lower(), operation.get("path"), operation.get("value")
    if op == "remove":
        change = _change(kind, path, None) if isinstance(path, str) and "value" not in operation else None
        return None if change is None or change.attribute.required else [change]
    if op not in ("add", "replace") or value is None:
        return None
    if path:
        change = _change(kind, path, value)
        return None if change is None else [change]
    if not isinstance(value, dict) or not value:
        return None
    changes = [_change(kind, key, item) for key, item in value.items()]
    return None if any(change is None for change in changes) else changes  # type: ignore[return-value]


def _change(kind: ResourceKind, path: Any, value: Any) -> _Change | None:
    match = _PLAIN_PATH.fullmatch(str(path))
    if match is None:
        return None
    uri, name = match.group(1), match.group(2)
    attribute = kind.resolve(name, uri)
    if attribute is None or attribute.multi or attribute.type not in _PLAIN_TYPES:
        return None
    if attribute.mutability != "readWrite" or attribute.returned == "never":
        return None
    extension = ENTERPRISE if uri is not None and uri.lower() == ENTERPRISE.lower() else None
    if uri is not None and extension is None and uri.lower() != kind.core.lower():
        return None
    if value is None:
        return _Change(attribute, extension, None)
    plain = _plain_value(attribute, value)
    return None if plain is None else _Change(attribute, extension, plain)


def _plain_value(attribute: Attribute, value: Any) -> Any:
    if attribute.type == "boolean":
        if isinstance(value, bool):
            return value
        lowered = value.lower() if isinstance(value, str) else None
        return {"true": True, "false": False}.get(lowered or "")
    if attribute.type in ("integer", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value if attribute.type == "decimal" or isinstance(value, int) else None
    return value if isinstance(value, str) and value else None


def apply_to_stored(kind: ResourceKind, patch: Patch, stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored form after a patch of plain changes only (`patch.simple`), or None when nothing changed."""
    body = {key: (dict(value) if isinstance(value, dict) else value) for key, value in stored.items()}
    for change in patch.simple or ():
        host = body.setdefault(change.extension, {}) if change.extension else body
        if change.value is None:
            host.pop(change.attribute.name, None)
        else:
            host[change.attribute.name] = change.value
    if ENTERPRISE in body:
        if body[ENTERPRISE]:
            schemas = list(body.get("schemas") or [kind.core])
            body["schemas"] = schemas if ENTERPRISE in schemas else [*schemas, ENTERPRISE]
        else:
            del body[ENTERPRISE]
            body["schemas"] = [urn for urn in body.get("schemas") or [kind.core] if urn != ENTERPRISE]
    return None if body == dict(stored) else body


# --- the general case: scim2-models ----------------------------------------------------------------------------


def apply_to_model(kind: ResourceKind, patch: Patch, current: dict[str, Any]) -> Any | None:
    """The resource after the patch (scim2-models), or None when it reports no change; SCIM errors else."""
    validated = patch.validated or validated_patch(kind, patch.operations)
    body = {key: value for key, value in current.items() if key not in ("meta", "groups")}
    try:
        resource = kind.model.model_validate(body, scim_policy=POLICY)
        return resource if validated.patch(resource, POLICY) else None
    except SCIMException:
        raise
    except ValidationError as exc:
        raise validation_error(exc) from None


# --- group members as set operations ----------------------------------------------------------------------------


def split_member_operations(
    operations: tuple[dict[str, Any], ...],
) -> tuple[list[MemberOperation], tuple[dict[str, Any], ...]] | None:
    """(the member operations as set operations, the other operations), or None when a member operation is one
    set arithmetic cannot express (`members[display eq ...]`, a sub-attribute path): then the models apply it all.

    Recognised, as Okta and Entra send them: add/replace `members` with a list, remove `members` (all, or a value
    list), remove `members[value eq "x"]`, and a path-less add/replace whose value holds `members`."""
    members: list[MemberOperation] = []
    others: list[dict[str, Any]] = []
    for operation in operations:
        op, path = str(operation.get("op", "")).lower(), str(operation.get("path") or "").strip()
        if not path:
            value = operation.get("value")
            key = next((k for k in value if k.lower() in _MEMBERS), None) if isinstance(value, dict) else None
            if key is None or not isinstance(value, dict):
                others.append(operation)
                continue
            items = _member_items(value[key])
            if items is None or op not in ("add", "replace"):
                return None
            members.append((op, items))
            rest = {k: v for k, v in value.items() if k != key}
            if rest:
                others.append({**operation, "value": rest})
            continue
        found = _member_operation(op, path, operation)
        if isinstance(found, bool):
            return None
        if found is None:
            others.append(operation)
        else:
            members.append(found)
    return members, tuple(others)


def _member_operation(op: str, path: str, operation: dict[str, Any]) -> MemberOperation | bool | None:
    """The set operation of one operation on members; None: not about members; False: not expressible."""
    if path.lower() in _MEMBERS:
        if op == "remove" and operation.get("value") is None:
            return ("replace", [])
        items = _member_items(operation.get("value"))
        return False if items is None or op not in ("add", "remove", "replace") else (op, items)
    match = _MEMBER_EQ.fullmatch(path)
    if match is not None and op == "remove" and operation.get("value") is None:
        try:
            value = json.loads(match.group(1))
        except ValueError:
            return False
        return ("remove", [(value, None)])
    lowered = path.lower()
    return False if lowered.startswith("members") or lowered.startswith(f"{_CORE_GROUP}:members") else None


_CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:group"


def _member_items(value: Any) -> list[tuple[str, str | None]] | None:
    """[(value, display)] of a member list (or a single member); None when an item has no string value."""
    listed = value if isinstance(value, list) else [value]
    items: list[tuple[str, str | None]] = []
    for item in listed:
        fields = {k.lower(): v for k, v in item.items()} if isinstance(item, dict) else {}
        member, display = fields.get("value"), fields.get("display")
        if not isinstance(member, str) or not member or not isinstance(display, str | None):
            return None
        items.append((member, display))
    return items


def apply_member_operations(
    current: Mapping[str, str | None], operations: list[MemberOperation]
) -> dict[str, str | None]:
    """The member values (with display) after the operations, in order: one pass over the request."""
    result = dict(current)
    for op, items in operations:
        if op == "replace":
            result = {}
        if op == "remove":
            for value, _display in items:
                result.pop(value, None)
            continue
        for value, display in items:
            result[value] = display or result.get(value)
    return result
