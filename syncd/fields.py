"""The LiteLLM user fields syncd keeps in step, syncd's marker, and their digest. Purely computational.

Shared by the plan (what to write), the store (the digest of what was applied, so a no-op run settles people
without reading their records) and apply (the marker of a suspension).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from syncd.model import DesiredUser

__all__ = [
    "USER_FIELDS",
    "combine_digest",
    "desired_fields",
    "fields_digest",
    "marker",
    "own_part",
    "plain",
    "same_field",
    "shared_part",
]

#: the LiteLLM user fields syncd keeps in step (auto_create_key is sent on creation only)
USER_FIELDS = (
    "user_email",
    "user_role",
    "models",
    "tpm_limit",
    "rpm_limit",
    "max_budget",
    "budget_duration",
    "user_alias",
    "metadata",
)


def marker(source: str, external_id: str) -> dict[str, Any]:
    """syncd's mark on the LiteLLM users it manages (metadata.syncd)."""
    return {"managed": True, "source": source, "external_id": external_id}


def desired_fields(user: DesiredUser) -> dict[str, Any]:
    """The LiteLLM fields a desired user should have, metadata (marker, scim_active) included."""
    metadata = {**user.metadata, "syncd": marker(user.source, user.external_id), "scim_active": True}
    return {
        "user_email": user.email or None,
        "user_role": user.role,
        "models": list(user.models),
        "tpm_limit": user.tpm_limit,
        "rpm_limit": user.rpm_limit,
        "max_budget": user.max_budget,
        "budget_duration": user.budget_duration,
        "user_alias": user.user_alias,
        "metadata": metadata,
    }


def same_field(name: str, want: Any, have: Any) -> bool:
    """Whether a user field's desired value equals the held one, as LiteLLM compares it."""
    if name == "models":
        return sorted(want or []) == sorted(have or [])
    if name == "max_budget" and want is not None and have is not None:
        return math.isclose(float(want), float(have), rel_tol=1e-9, abs_tol=1e-9)
    if name == "user_email":
        return (want or "").lower() == (have or "").lower()
    if name == "metadata":
        have = have or {}
        return all(have.get(key) == value for key, value in (want or {}).items())
    return bool(want == have)


def plain(value: Any) -> Any:
    """A value in a form whose repr does not depend on key order (mappings as sorted pairs, lists as tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, plain(item)) for key, item in value.items())) if value else ()
    if isinstance(value, list | tuple):
        return tuple(map(plain, value))
    return value


def fields_digest(fields: Mapping[str, Any]) -> str:
    """A digest of LiteLLM user fields in the form `same_field` compares them (e-mail in lower case, models sorted).

    Two sets of fields with the same digest differ in no field, so a managed user whose applied fields have the
    desired fields' digest has nothing to plan (`settled_users`); different digests only mean: compare in full.
    """
    metadata = fields.get("metadata") or {}
    return combine_digest(shared_part(fields), own_part(fields.get("user_email"), fields.get("user_alias"), metadata))


def shared_part(fields: Mapping[str, Any]) -> str:
    """What people with the same grants share: every field but the e-mail, the alias and syncd's marker."""
    budget = fields.get("max_budget")
    metadata = fields.get("metadata") or {}
    return repr(
        (
            fields.get("user_role"),
            sorted(fields.get("models") or ()),
            fields.get("tpm_limit"),
            fields.get("rpm_limit"),
            None if budget is None else float(budget),
            fields.get("budget_duration"),
            plain({key: value for key, value in metadata.items() if key != "syncd"}),
        )
    )


def own_part(email: str | None, alias: str | None, metadata: Mapping[str, Any]) -> str:
    """What is a person's own: the e-mail, the alias and syncd's marker."""
    return repr(((email or "").lower(), alias, plain(metadata.get("syncd"))))


def combine_digest(shared: str, own: str) -> str:
    """The digest of a shared part and an own part (see `fields_digest`)."""
    return hashlib.blake2b(f"{shared}\n{own}".encode(), digest_size=16).hexdigest()
