"""Groups to what a person gets in LiteLLM: a purely computational module with no side effects.

`desired_state(identities, groups, rules)` merges each person's identities across sources (by email, the source
with the highest priority winning), finds the grants of every group they belong to, and combines them with the
precedence rules of CONTRACT.md:

- role: the most privileged wins; models and teams: the union; tpm_limit, rpm_limit, max_budget: the largest;
  budget_duration: the one of the grant that gave max_budget; auto_create_keys: true if any grant says so;
- a grant may carry a priority: for each scalar field, only the grants with the highest priority that set it count;
- defaults fill what no grant sets; a person's own overrides are applied last.

Every field of the result records where its value came from (`DesiredUser.origins`).
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncd.model import ROLE_RANK, DesiredUser, FieldOrigin, Group, Identity

__all__ = [
    "GRANT_FIELDS",
    "DesiredState",
    "Grant",
    "MappingRules",
    "combine_grants",
    "desired_state",
    "grants_for",
    "normalise_group_key",
    "rules_from_settings",
]

#: the LiteLLM fields a grant can set
GRANT_FIELDS = (
    "role",
    "models",
    "tpm_limit",
    "rpm_limit",
    "max_budget",
    "budget_duration",
    "auto_create_keys",
    "teams",
)
_LARGEST = ("tpm_limit", "rpm_limit", "max_budget")
_DN_SPACES = re.compile(r"\s*([,=+])\s*")


@functools.lru_cache(maxsize=65_536)
def normalise_group_key(text: str) -> str:
    """A group name or DN in the form used for matching: lower case, no spaces around DN separators.

    Cached: the mapping asks for the same few thousand group names and DNs once per distinct set of groups, which
    at 100,000 users is nearly once per person.
    """
    return _DN_SPACES.sub(r"\1", text.strip()).lower()


@dataclass(frozen=True, slots=True)
class Grant:
    """What one source of grants (a config mapping, a group attribute, an override) gives, and its rank."""

    origin: FieldOrigin
    values: Mapping[str, Any]  # a subset of GRANT_FIELDS, plus "metadata"
    priority: int = 0
    order: int = 0  # config order: breaks ties deterministically


@dataclass(frozen=True, slots=True)
class MappingRules:
    """The mapping configuration, as plain data: grants by group key, defaults, and what to do with the unmapped."""

    grants_by_group: Mapping[str, Sequence[Grant]]
    defaults: Mapping[str, Any]
    source_priorities: Mapping[str, int] = field(default_factory=dict)
    #: directory grants (group.grant) are used unless an authoritative config mapping names the same group
    authoritative_groups: frozenset[str] = frozenset()


@dataclass(slots=True)
class DesiredState:
    """The result of the mapping: who should exist in LiteLLM and how, who is present but in no mapped group."""

    users: dict[str, DesiredUser] = field(default_factory=dict)
    unmapped: dict[str, Identity] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def desired_state(identities: Iterable[Identity], groups: Iterable[Group], rules: MappingRules) -> DesiredState:
    """Compute every person's desired LiteLLM user from their identities, groups and the mapping rules."""
    state = DesiredState()
    # groups in the order _combine_for lists them, so that a group's position is its rank and a member's list of
    # positions comes out sorted
    ranked = sorted(groups, key=lambda g: (g.source, g.name.lower()))
    groups_of = _groups_by_member(ranked)
    granting = {i for i, group in enumerate(ranked) if grants_for([group], rules)}
    names = [group.dn or group.name for group in ranked]
    # people whose groups give the same grants get the same values: combine each distinct set of granting groups
    # once (with thousands of groups, nearly every person's full set of groups is different)
    combined: dict[tuple[int, ...], _Combined] = {}
    nothing: dict[str, list[int]] = {}
    for person in _merge_people(identities, rules.source_priorities):
        winner = person[0]
        if len(person) == 1:
            found: list[int] | tuple[int, ...] = groups_of.get(winner.source, nothing).get(winner.external_id, ())
        else:
            found = sorted(
                {i for ident in person for i in groups_of.get(ident.source, nothing).get(ident.external_id, ())}
            )
        key = tuple(filter(granting.__contains__, found))
        entry = combined.get(key)
        if entry is None:
            entry = combined[key] = _combine_for([ranked[i] for i in key], rules)
        if winner.user_id in state.users or winner.user_id in state.unmapped:
            state.problems.append(
                f"user_id {winner.user_id!r} is claimed by two people ({winner.email!r} from {winner.source} and "
                "another); the first by source priority is kept"
            )
        elif entry.values is None:
            state.unmapped[winner.user_id] = winner
        else:
            state.users[winner.user_id] = _desired_user(winner, entry, tuple(map(names.__getitem__, found)))
    return state


@dataclass(frozen=True, slots=True)
class _Combined:
    """The grants of one set of groups, combined (values None: no group of the set is mapped), and the desired
    user's fields they give (`fields`: keyword arguments of DesiredUser, converted once for everyone they fit)."""

    values: Mapping[str, Any] | None
    origins: Mapping[str, FieldOrigin]
    fields: Mapping[str, Any] = field(default_factory=dict)


def _combine_for(member_of: list[Group], rules: MappingRules) -> _Combined:
    member_of.sort(key=lambda g: (g.source, g.name.lower()))
    grants = grants_for(member_of, rules)
    if not grants:
        return _Combined(None, {})
    values, origins = combine_grants(grants, rules.defaults)
    return _Combined(values, origins, _user_fields(values, origins))


def _merge_people(identities: Iterable[Identity], priorities: Mapping[str, int]) -> list[list[Identity]]:
    """Identities grouped into people by email (an identity without one is its own person), best source first."""
    people: dict[str, list[Identity]] = {}
    for identity in identities:
        key = f"email:{identity.email.lower()}" if identity.email else f"id:{identity.source}:{identity.external_id}"
        found = people.get(key)
        if found is None:
            people[key] = [identity]
        else:
            found.append(identity)
    ranked = list(people.values())
    for members in ranked:
        if len(members) > 1:
            members.sort(key=lambda i: (-priorities.get(i.source, 0), i.source, i.external_id))
    ranked.sort(key=lambda m: (-priorities.get(m[0].source, 0), m[0].source, m[0].user_id))
    return ranked


def _groups_by_member(groups: Sequence[Group]) -> dict[str, dict[str, list[int]]]:
    """source -> member external id -> the positions of the groups they are in, ascending."""
    index: dict[str, defaultdict[str, list[int]]] = {}
    for position, group in enumerate(groups):
        of_source = index.get(group.source)
        if of_source is None:
            of_source = index[group.source] = defaultdict(list)
        for member in group.members:
            of_source[member].append(position)
    return dict(index)


def grants_for(member_of: Sequence[Group], rules: MappingRules) -> list[Grant]:
    """Every grant that applies to members of these groups: config mappings, then grants kept on the groups."""
    grants: list[Grant] = []
    for group in member_of:
        keys = {normalise_group_key(group.name)}
        if group.dn:
            keys.add(normalise_group_key(group.dn))
        for key in sorted(keys):
            grants.extend(rules.grants_by_group.get(key, ()))
        if group.grant and not keys & rules.authoritative_groups:
            grants.append(
                Grant(
                    FieldOrigin("group_attribute", group.dn or group.name),
                    group.grant,
                    int(group.grant.get("priority", 0)),
                    order=10_000,
                )
            )
    unique = {(g.origin, g.order): g for g in grants}
    return sorted(unique.values(), key=lambda g: g.order)


def combine_grants(
    grants: Sequence[Grant], defaults: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, FieldOrigin]]:
    """Combine grants field by field with the precedence rules; defaults fill the gaps. Returns values, origins."""
    values: dict[str, Any] = {}
    origins: dict[str, FieldOrigin] = {}
    for name in ("role", *_LARGEST, "auto_create_keys"):
        candidates = _top_priority(grants, name)
        if not candidates:
            continue
        if name == "role":
            best = max(candidates, key=lambda g: (ROLE_RANK.get(g.values["role"], 0), -g.order))
        elif name == "auto_create_keys":
            best = next((g for g in candidates if g.values[name]), candidates[0])
        else:
            best = max(candidates, key=lambda g: (float(g.values[name]), -g.order))
        values[name], origins[name] = best.values[name], best.origin
    _combine_budget_duration(grants, values, origins)
    for name in ("models", "teams"):
        merged: dict[str, FieldOrigin] = {}
        for grant in grants:
            for item in grant.values.get(name) or ():
                merged.setdefault(item, grant.origin)
        if merged:
            values[name] = tuple(sorted(merged))
            origins[name] = (
                next(iter(merged.values()))
                if len(set(merged.values())) == 1
                else FieldOrigin("union", ", ".join(sorted({o.name for o in merged.values()})))
            )
    metadata: dict[str, Any] = {}
    for grant in sorted(grants, key=lambda g: (g.priority, g.order)):
        metadata.update(grant.values.get("metadata") or {})
    if metadata:
        values["metadata"] = metadata
    _fill_defaults(values, origins, defaults)
    return values, origins


def _top_priority(grants: Sequence[Grant], name: str) -> list[Grant]:
    setting = [g for g in grants if g.values.get(name) is not None]
    if not setting:
        return []
    top = max(g.priority for g in setting)
    return [g for g in setting if g.priority == top]


def _combine_budget_duration(grants: Sequence[Grant], values: dict[str, Any], origins: dict[str, FieldOrigin]) -> None:
    if "max_budget" in origins:
        giver = next(g for g in grants if g.origin == origins["max_budget"] and g.values.get("max_budget") is not None)
        if giver.values.get("budget_duration") is not None:
            values["budget_duration"], origins["budget_duration"] = giver.values["budget_duration"], giver.origin
        return
    candidates = _top_priority(grants, "budget_duration")
    if candidates:
        best = min(candidates, key=lambda g: g.order)
        values["budget_duration"], origins["budget_duration"] = best.values["budget_duration"], best.origin


def _fill_defaults(values: dict[str, Any], origins: dict[str, FieldOrigin], defaults: Mapping[str, Any]) -> None:
    for name, default in defaults.items():
        if default is None or name in values:
            continue
        if name == "budget_duration" and "max_budget" in values and origins["max_budget"].kind != "default":
            continue  # a duration without the budget it belongs to would be a different budget
        values[name] = tuple(default) if isinstance(default, list) else default
        origins[name] = FieldOrigin("default", "defaults")


def _user_fields(values: Mapping[str, Any], origins: Mapping[str, FieldOrigin]) -> dict[str, Any]:
    return {
        "role": values.get("role", "internal_user"),
        "models": values.get("models", ()),
        "tpm_limit": _int_or_none(values.get("tpm_limit")),
        "rpm_limit": _int_or_none(values.get("rpm_limit")),
        "max_budget": _float_or_none(values.get("max_budget")),
        "budget_duration": values.get("budget_duration"),
        "auto_create_keys": bool(values.get("auto_create_keys", False)),
        "teams": values.get("teams", ()),
        "metadata": values.get("metadata", {}),
        "origins": origins,
    }


def _desired_user(winner: Identity, entry: _Combined, group_names: tuple[str, ...]) -> DesiredUser:
    fields = entry.fields
    if winner.overrides:
        values, origins = dict(entry.values or {}), dict(entry.origins)
        for name, value in winner.overrides.items():
            if name in GRANT_FIELDS and value is not None:
                values[name] = tuple(value) if isinstance(value, list) else value
                origins[name] = FieldOrigin("override", winner.dn or winner.user_id)
        fields = _user_fields(values, origins)
    return DesiredUser(
        winner.user_id,
        winner.email,
        winner.source,
        winner.external_id,
        winner.active,
        user_alias=winner.display_name,
        groups=group_names,
        **fields,
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def rules_from_settings(settings: Any) -> MappingRules:
    """The mapping rules of a loaded `syncd.settings.Settings` (read as plain attributes)."""
    grants: dict[str, list[Grant]] = {}
    authoritative: set[str] = set()
    for order, mapping in enumerate(settings.mappings):
        key = normalise_group_key(mapping.group)
        values = {name: getattr(mapping, name) for name in GRANT_FIELDS}
        values["models"] = tuple(values["models"]) if values["models"] is not None else None
        values["teams"] = tuple(values["teams"] or ())
        values["metadata"] = dict(mapping.metadata)
        grant = Grant(FieldOrigin("mapping", mapping.group), values, mapping.priority, order)
        grants.setdefault(key, []).append(grant)
        if mapping.authoritative:
            authoritative.add(key)
    defaults = {name: getattr(settings.defaults, name, None) for name in GRANT_FIELDS if name != "teams"}
    return MappingRules(grants, defaults, settings.source_priorities, frozenset(authoritative))
