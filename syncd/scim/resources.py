"""SCIM resources as JSON: validation through scim2-models, what a user write stores, responses and their shape.

The store keeps each resource as the dict scim2-models dumps (no id, meta, password, groups or members: those come
from columns and memberships), so a response is that dict plus id, meta and the relations, cut to the requested
attributes without another pass through the models.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, InvalidValueException, SCIMException

from syncd.scim.filters import comparison_key
from syncd.scim.schemas import ENTERPRISE, POLICY, Attribute, ResourceKind
from syncd.store.scim import GroupRecord, IndexedValue, UserRecord, UserWrite, name_key
from syncd.store.tables import MAX_EMAIL, MAX_TEXT, MAX_USER_ID

__all__ = [
    "changed_keys",
    "check_length",
    "derive_user",
    "etag",
    "group_json",
    "index_values",
    "project",
    "tolerate",
    "user_json",
    "validate_resource",
]

_READ_ONLY = {"id", "meta", "groups"}
_MANAGER = f"{ENTERPRISE}:manager".lower()
_MAX_KEY = 600


def etag(version: int) -> str:
    """The weak ETag (and meta.version) of a resource version."""
    return f'W/"{version}"'


def _iso(moment: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _meta(kind: str, location: str, created: datetime, updated: datetime, version: int) -> dict[str, Any]:
    return {
        "resourceType": kind,
        "created": _iso(created),
        "lastModified": _iso(updated),
        "location": location,
        "version": etag(version),
    }


def user_json(record: UserRecord, base_url: str) -> dict[str, Any]:
    """The full SCIM representation of a stored user."""
    body: dict[str, Any] = {"schemas": record.resource.get("schemas", []), "id": record.id}
    body.update((key, value) for key, value in record.resource.items() if key != "schemas")
    if record.groups:
        body["groups"] = [
            {"value": gid, "$ref": f"{base_url}/Groups/{gid}", "display": name, "type": "direct"}
            for gid, name in record.groups
        ]
    location = f"{base_url}/Users/{record.id}"
    body["meta"] = _meta("User", location, record.created, record.updated, record.version)
    return body


def group_json(record: GroupRecord, base_url: str, *, members: bool = True) -> dict[str, Any]:
    """The full SCIM representation of a stored group."""
    body: dict[str, Any] = {"schemas": record.resource.get("schemas", []), "id": record.id}
    body.update((key, value) for key, value in record.resource.items() if key != "schemas")
    if members and record.members:
        body["members"] = [_member_json(member.id, member.display, base_url) for member in record.members]
    location = f"{base_url}/Groups/{record.id}"
    body["meta"] = _meta("Group", location, record.created, record.updated, record.version)
    return body


def _member_json(id: str, display: str | None, base_url: str) -> dict[str, Any]:
    member = {"value": id, "$ref": f"{base_url}/Users/{id}", "type": "User"}
    if display:
        member["display"] = display
    return member


# --- what providers send -----------------------------------------------------------------------------------------


def tolerate(payload: Any, base_url: str) -> Any:
    """Smooth over what Okta and Entra really send: nulls (`$ref: null`), a manager given as a bare id."""
    if isinstance(payload, list):
        return [tolerate(item, base_url) for item in payload if item is not None]
    if not isinstance(payload, dict):
        return payload
    cleaned = {key: tolerate(value, base_url) for key, value in payload.items() if value is not None}
    for key, value in list(cleaned.items()):
        if key.lower() == ENTERPRISE.lower() and isinstance(value, dict):
            for name in [name for name in value if name.lower() == "manager"]:
                value[name] = manager_value(value[name], base_url)
                if value[name] is None:
                    del value[name]
        elif key.lower() == _MANAGER:
            cleaned[key] = manager_value(value, base_url)
    return cleaned


def manager_value(value: Any, base_url: str) -> Any:
    """A manager reference with its `$ref`, from a bare id or a {value} without one."""
    if isinstance(value, str):
        return {"value": value, "$ref": f"{base_url}/Users/{value}"} if value else None
    if isinstance(value, dict) and not value.get("value"):
        return None
    if isinstance(value, dict) and not value.get("$ref"):
        return {**value, "$ref": f"{base_url}/Users/{value['value']}"}
    return value


def validate_resource(kind: ResourceKind, payload: Any, context: Context) -> Any:
    """The payload as a scim2-models resource, or a SCIM error (invalidSyntax, invalidValue, ...)."""
    if not isinstance(payload, dict):
        raise InvalidValueException(detail="the body must be a JSON object")
    payload = {key: value for key, value in payload.items() if key.lower() not in _READ_ONLY}
    payload["schemas"] = _known_schemas(kind, payload.get("schemas"))
    try:
        return kind.model.model_validate(payload, scim_ctx=context, scim_policy=POLICY)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _known_schemas(kind: ResourceKind, schemas: Any) -> list[str]:
    if schemas is not None and not isinstance(schemas, list):
        raise InvalidValueException(detail="schemas is a list of schema URNs")
    known = {urn.lower(): urn for urn in (kind.core, *kind.extensions)}
    listed = [known[s.lower()] for s in schemas if isinstance(s, str) and s.lower() in known] if schemas else []
    return listed if kind.core in listed else [kind.core, *listed]


def validation_error(exc: ValidationError) -> SCIMException:
    """The SCIM error a pydantic validation error stands for (the first one, with where it is)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "__root__")
    message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    context = first.get("ctx") or {}
    kind = str(first.get("type", ""))
    error = SCIMException(detail=message)
    error.status = int(context.get("status") or 400)
    error.scim_type = str(context.get("scim_type") or (kind.removeprefix("scim_") if kind.startswith("scim_") else ""))
    error.scim_type = error.scim_type or "invalidValue"
    return error


def stored_form(kind: ResourceKind, resource: Any) -> dict[str, Any]:
    """What the store keeps of a validated resource: its dump without id, meta and relations.

    Dumped in scim2-models' DEFAULT context, which gives what a response dump gives (aliases, no nulls, no empty
    values, the schemas of the extensions present) without its filtering by `returned`, which here would only drop
    `password` (the one attribute returned "never" in User, the enterprise extension, Group and syncd's extension,
    none "request"), dropped below anyway, for about a third of the cost (tests/scim/test_stored_form.py checks it).
    """
    body = resource.model_dump(scim_ctx=Context.DEFAULT)
    for key in ("id", "meta", "groups", "members", "password"):
        body.pop(key, None)
    return dict(body)


# --- what a user write stores ------------------------------------------------------------------------------------


def primary_email(body: Mapping[str, Any]) -> str:
    """The primary email, else the work one, else the first, else userName when it holds '@', else ''."""
    emails = [e for e in body.get("emails") or [] if isinstance(e, dict) and e.get("value")]
    for chosen in (
        [e for e in emails if e.get("primary") is True],
        [e for e in emails if str(e.get("type", "")).lower() == "work"],
        emails,
    ):
        if chosen:
            return str(chosen[0]["value"])
    user_name = str(body.get("userName") or "")
    return user_name if "@" in user_name else ""


def derive_user(
    body: Mapping[str, Any],
    id: str,
    user_id_attribute: str,
    kind: ResourceKind,
    *,
    indexed: Collection[str] | None = None,
) -> UserWrite:
    """The columns a user's stored form gives: the LiteLLM user_id, email, display name, active, indexed values.

    `indexed`: the only keys of `body` whose values to index (those a rewrite changed, `changed_keys`); all else.
    """
    user_name = unicodedata.normalize("NFC", str(body.get("userName") or ""))
    if body.get("userName") is not None and user_name != body.get("userName"):
        body = {**body, "userName": user_name}  # one Unicode form, stored and compared (issue 13)
    email = primary_email(body)
    candidates = {"userName": user_name, "email": email, "externalId": body.get("externalId"), "id": id}
    user_id = candidates[user_id_attribute]
    if not user_id:
        raise InvalidValueException(detail=f"the user has no {user_id_attribute}, which syncd takes as its user_id")
    name = body.get("name") if isinstance(body.get("name"), dict) else {}
    display = body.get("displayName") or (name or {}).get("formatted") or None
    check_length(f"{user_id_attribute} (the LiteLLM user_id)", str(user_id), MAX_USER_ID)
    check_length("userName", name_key(user_name), MAX_TEXT)
    check_length("the email", email, MAX_EMAIL)
    check_length("displayName", str(display or ""), MAX_TEXT)
    check_length("externalId", str(body.get("externalId") or ""), MAX_TEXT)
    return UserWrite(
        user_name=user_name,
        scim_external_id=body.get("externalId"),
        user_id=str(user_id),
        email=email,
        display_name=display,
        active=body.get("active") is not False,
        resource=body,
        values=tuple(index_values(body, kind, keys=indexed)),
    )


def check_length(what: str, value: str, limit: int) -> None:
    """invalidValue when `value` is longer than its column holds (the same limit on SQLite and PostgreSQL)."""
    if len(value) > limit:
        raise InvalidValueException(detail=f"{what} is longer than {limit} characters")


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """The keys of a stored form whose values differ between `before` and `after` (present in one only included).

    Each indexed value belongs to exactly one key (an extension's to its URN), so re-indexing a rewrite needs only
    the values of these keys, before and after.
    """
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def index_values(
    body: Mapping[str, Any], kind: ResourceKind, *, keys: Collection[str] | None = None
) -> Iterable[IndexedValue]:
    """Every filterable value of a user's stored form that has no column of its own (of `keys` only, if given)."""
    for key, value in body.items():
        if keys is not None and key not in keys:
            continue
        if key.lower() == ENTERPRISE.lower() and isinstance(value, dict):
            for name, inner in value.items():
                attribute = kind.resolve(name, ENTERPRISE)
                if attribute is not None:
                    yield from _values(attribute, inner)
            continue
        attribute = kind.resolve(key)
        if attribute is not None and attribute.path not in ("username", "externalid", "id", "active"):
            yield from _values(attribute, value)


def _values(attribute: Attribute, value: Any) -> Iterable[IndexedValue]:
    if attribute.multi and isinstance(value, list):
        for position, item in enumerate(value):
            yield IndexedValue(attribute.path, position, None)
            yield from _complex(attribute, item, position)
    elif attribute.type == "complex":
        yield from _complex(attribute, value, 0)
    elif (indexed := _scalar(attribute, value, 0)) is not None:
        yield indexed


def _complex(attribute: Attribute, value: Any, position: int) -> Iterable[IndexedValue]:
    if not isinstance(value, dict):
        return
    for name, inner in value.items():
        sub = attribute.sub(name)
        if sub is not None and (indexed := _scalar(sub, inner, position)) is not None:
            yield indexed


def _scalar(attribute: Attribute, value: Any, position: int) -> IndexedValue | None:
    if attribute.type == "binary" or value is None or value == "":
        return None
    if isinstance(value, bool):
        return IndexedValue(attribute.path, position, "true" if value else "false")
    if isinstance(value, int | float):
        return IndexedValue(attribute.path, position, str(value), float(value))
    key = comparison_key(str(value), attribute.case_exact)
    return IndexedValue(attribute.path, position, key) if len(key) <= _MAX_KEY else None


# --- attributes / excludedAttributes -----------------------------------------------------------------------------


def project(body: dict[str, Any], kind: ResourceKind, attributes: list[str], excluded: list[str]) -> dict[str, Any]:
    """The response cut to `attributes`, or without `excluded` (RFC 7644 §3.4.2.5); id and schemas always stay."""
    if attributes:
        return _keep(body, kind, attributes)
    if excluded:
        return _drop(body, kind, excluded)
    return body


def _split(kind: ResourceKind, text: str) -> tuple[str | None, str, str | None]:
    """(the JSON key of the extension or None, the attribute's JSON key, its sub-attribute's JSON key or None)."""
    lowered = text.lower()
    for urn in (kind.core, *kind.extensions):
        if lowered == urn.lower():
            return (urn if urn != kind.core else None), "", None
        if lowered.startswith(urn.lower() + ":"):
            rest = text[len(urn) + 1 :]
            return (urn if urn != kind.core else None), *_names(kind, urn, rest)
    return None, *_names(kind, None, text)


def _names(kind: ResourceKind, urn: str | None, rest: str) -> tuple[str, str | None]:
    name, _, sub = rest.partition(".")
    attribute = kind.resolve(name, urn)
    if attribute is None:
        return name, sub or None
    sub_attribute = attribute.sub(sub) if sub else None
    return attribute.name, (sub_attribute.name if sub_attribute else sub or None)


def _keep(body: dict[str, Any], kind: ResourceKind, attributes: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {"schemas": body.get("schemas"), "id": body.get("id")}
    for text in attributes:
        urn, name, sub = _split(kind, text)
        source, target = (body.get(urn), kept.setdefault(urn, {})) if urn else (body, kept)
        if not isinstance(source, dict):
            continue
        if not name:
            target.update(source)
        elif name in source:
            target[name] = _merge(target.get(name), _pick(source[name], sub))
    return {key: value for key, value in kept.items() if value not in ({}, None)}


def _pick(value: Any, sub: str | None) -> Any:
    if sub is None:
        return value
    if isinstance(value, list):
        return [{sub: item[sub]} for item in value if isinstance(item, dict) and sub in item]
    return {sub: value[sub]} if isinstance(value, dict) and sub in value else None


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **new}
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [{**a, **b} if isinstance(a, dict) and isinstance(b, dict) else b for a, b in zip(old, new, strict=True)]
    return new


def _drop(body: dict[str, Any], kind: ResourceKind, excluded: list[str]) -> dict[str, Any]:
    result = dict(body)
    for text in excluded:
        urn, name, sub = _split(kind, text)
        if name in ("id", "schemas") or (urn is None and not name):
            continue
        if urn and not name:
            result.pop(urn, None)
            continue
        host = dict(result.get(urn) or {}) if urn else result
        if sub is None:
            host.pop(name, None)
        elif isinstance(host.get(name), list):
            host[name] = [{k: v for k, v in item.items() if k != sub} for item in host[name]]
        elif isinstance(host.get(name), dict):
            host[name] = {k: v for k, v in host[name].items() if k != sub}
        if urn:
            result[urn] = host
    return result
