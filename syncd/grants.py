"""Grants kept in the directory: parse and validate what a group (or a person) carries. Purely computational.

A grant is read either from one attribute per field (`groups.mapping_attributes: {role: litellmRole, ...}`) or from
one attribute holding the whole grant as JSON after a `litellm:` prefix (`groups.grant_attribute: description`).
A malformed grant is refused whole with a message naming the entry, the attribute and the problem; a role of
proxy_admin is honoured only from groups under `allow_admin_grants_from` when that list is set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncd.durations import budget_duration_for_litellm
from syncd.mapping import GRANT_FIELDS
from syncd.model import ROLES

__all__ = ["GRANT_PREFIX", "GrantResult", "admin_allowed", "grant_from_fields", "parse_grant", "parse_grant_json"]

GRANT_PREFIX = "litellm:"
_LISTS = ("models", "teams")
_INTS = ("tpm_limit", "rpm_limit")
_LARGEST_INT = 2**63 - 1
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}
#: roles LiteLLM refuses for users (422): a grant carrying one is refused with a warning
_USER_REFUSED_ROLES = ("team", "customer")
#: what a grant kept in the directory may hold: the LiteLLM fields, and its priority
FIELDS = (*GRANT_FIELDS, "priority")


@dataclass(slots=True)
class GrantResult:
    """A parsed grant (empty when there is none or it was refused) and the warnings met on the way."""

    grant: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """True when a grant was present but malformed."""
        return bool(self.warnings) and not self.grant


def _field_value(name: str, values: Sequence[str]) -> Any:
    """One field from its attribute values (raises ValueError naming the problem)."""
    texts = [v.strip() for v in values if v is not None and str(v).strip()]
    if name in _LISTS:
        return tuple(sorted({part.strip() for v in texts for part in v.split(",") if part.strip()}))
    if len(texts) != 1:
        raise ValueError(f"expected one value, got {len(texts)}")
    return _scalar(name, texts[0])


def _scalar(name: str, value: Any) -> Any:
    text = str(value).strip()
    if name == "role":
        if text not in ROLES:
            raise ValueError(f"{text!r} is not a LiteLLM role ({', '.join(ROLES)})")
        if text in _USER_REFUSED_ROLES:
            raise ValueError(f"LiteLLM refuses the role {text!r} for users (422)")
        return text
    if name in _INTS or name == "priority":
        if isinstance(value, bool) or not text.lstrip("-").isdigit() or (name in _INTS and int(text) < 0):
            raise ValueError(f"{text!r} is not a whole number")
        if abs(int(text)) > _LARGEST_INT:
            raise ValueError(f"{text!r} is larger than LiteLLM can store")
        return int(text)
    if name == "max_budget":
        try:
            budget = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if budget < 0 or not math.isfinite(budget):
            raise ValueError(f"{text!r} is not a budget")
        return budget
    if name == "budget_duration":
        return budget_duration_for_litellm(text)
    if name == "auto_create_keys":
        if isinstance(value, bool):
            return value
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() in _TRUE
    raise ValueError(f"{name!r} is not a grant field ({', '.join(FIELDS)})")


def parse_grant(
    where: str,
    attributes: Mapping[str, Sequence[str]],
    mapping_attributes: Mapping[str, str],
    grant_attribute: str | None = None,
) -> GrantResult:
    """The grant an entry carries: per-field attributes and/or a `litellm:` JSON attribute (the JSON wins)."""
    result = GrantResult()
    lowered = {name.lower(): values for name, values in attributes.items()}
    grant: dict[str, Any] = {}
    for name, attribute in mapping_attributes.items():
        values = lowered.get(attribute.lower())
        if not values:
            continue
        try:
            grant[name] = _field_value(name, values)
        except ValueError as exc:
            result.warnings.append(f"{where}: attribute {attribute} ({name}): {exc}; grant ignored")
            return result
    if grant_attribute:
        from_json = parse_grant_json(where, grant_attribute, lowered.get(grant_attribute.lower()) or ())
        if from_json.warnings:
            result.warnings.extend(from_json.warnings)
            return result
        grant.update(from_json.grant)
    result.grant = grant
    return result


def parse_grant_json(where: str, attribute: str, values: Sequence[str]) -> GrantResult:
    """The grant in the values of `attribute` that start with `litellm:` (other values are ignored)."""
    result = GrantResult()
    tagged = [str(v).strip()[len(GRANT_PREFIX) :] for v in values if str(v).strip().lower().startswith(GRANT_PREFIX)]
    if not tagged:
        return result
    if len(tagged) > 1:
        result.warnings.append(
            f"{where}: attribute {attribute}: {len(tagged)} values start with {GRANT_PREFIX}; grant ignored"
        )
        return result
    try:
        data = json.loads(tagged[0])
    except json.JSONDecodeError as exc:
        result.warnings.append(
            f"{where}: attribute {attribute}: broken JSON ({exc.msg} at column {exc.colno}); grant ignored"
        )
        return result
    if not isinstance(data, dict):
        result.warnings.append(f"{where}: attribute {attribute}: the grant must be a JSON object; grant ignored")
        return result
    return grant_from_fields(f"{where}: attribute {attribute}", data)


def grant_from_fields(where: str, data: Mapping[str, Any]) -> GrantResult:
    """A grant given as field -> value (JSON, a SCIM extension), validated; refused whole on the first problem."""
    result = GrantResult()
    try:
        result.grant = {name: _json_value(name, value) for name, value in data.items() if value is not None}
    except ValueError as exc:
        result.warnings.append(f"{where}: {exc}; grant ignored")
    return result


def _json_value(name: str, value: Any) -> Any:
    if name not in FIELDS:
        raise ValueError(f"{name!r} is not a grant field ({', '.join(FIELDS)})")
    if name in _LISTS:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name}: expected a list of names")
        return tuple(sorted({v.strip() for v in value if v.strip()}))
    try:
        return _scalar(name, value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def admin_allowed(dn: str | None, allowed_bases: Sequence[str]) -> bool:
    """True when a group at `dn` may grant proxy_admin: no list configured, or under one of the allowed DNs."""
    if not allowed_bases:
        return True
    if not dn:
        return False
    normal = ",".join(part.strip() for part in dn.lower().split(","))
    return any(
        normal == base or normal.endswith("," + base)
        for base in (",".join(p.strip() for p in b.lower().split(",")) for b in allowed_bases)
    )
