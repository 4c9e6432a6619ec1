"""Groups to what a person gets in LiteLLM: a purely computational module with no side effects.

`desired_state(identities, groups, rules)` finds the people (`identify_people`), the grants of every group they belong
to, and combines them with the precedence rules of CONTRACT.md.

Who is a person (each source owns its people):

- identities of different sources are different people, unless `identity.merge_by: email` says that the sources of
  `identity.merge_sources` describe the same people: then identities with the same email are one person, described by
  the source with the highest priority (ties: the source name first in order). People without an email are never
  merged;
- an email belongs to one person. It is held by, in this order: an active identity before a disabled one, the
  identity whose LiteLLM user carries it now (when the caller knows: `email_owners`), the identity recorded first
  (the store's order). Another active identity with the same email, in the same source or in a source not merged
  with the holder's, is refused: an `IdentityConflict`, reported, and its user_id is left as it is
  (`DesiredState.held`), never suspended. A disabled identity is never refused for its email: it is its own person;
- a user_id belongs to one person: the one recorded first; another person with it is refused the same way.

Which groups a mapping matches (`grants_for`): only groups of the sources it names (`sources:`, unset: every source).
A mapping whose group is a DN (it starts with an attribute type and `=`, RFC 4514) matches LDAP groups by their DN;
a SCIM group's displayName never matches a DN, unless the mapping names that SCIM source. Any other group name matches
an LDAP group's CN and a SCIM group's displayName. The config refuses a name without `sources:` that groups of a SCIM
token and of another source could both carry (`ambiguous_sources`), so that no tenant can take another source's
grants by naming a group alike; `describe_match` says in words what a mapping matches.

How grants combine:

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
    "IdentityConflict",
    "MappingRules",
    "ambiguous_sources",
    "combine_grants",
    "describe_match",
    "desired_state",
    "grants_for",
    "identify_people",
    "is_dn",
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
#: the identity conflicts described one by one in `DesiredState.problems`; the rest are counted in one line
_PROBLEMS_SHOWN = 50
_DN_SPACES = re.compile(r"\s*([,=+])\s*")
#: the start of an RFC 4514 DN: an attribute type (a name or an OID) and "="
_DN_START = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)\s*=")


def is_dn(text: str) -> bool:
    """True when a mapping's group is a DN (`cn=llm-admins,ou=groups,...`), matched against LDAP groups' DNs only."""
    return _DN_START.match(text) is not None


def ambiguous_sources(
    group: str, sources: Sequence[str] | None, *, directories: Sequence[str], tenants: Sequence[str]
) -> tuple[str, ...]:
    """The sources whose groups a mapping by name could match when it must say which (else ()).

    A name without `sources:` matches a group of that name in every source. That is refused as soon as a SCIM token
    (a tenant, who can create any group) and any other source are configured: the tenant could otherwise name a group
    after another source's group and get its grants. A DN matches directory groups only, so it never needs saying.
    """
    if sources is not None or is_dn(group) or not tenants or len(directories) + len(tenants) < 2:
        return ()
    return (*directories, *tenants)


def describe_match(
    group: str, sources: Sequence[str] | None, *, directories: Sequence[str], tenants: Sequence[str]
) -> str:
    """What a mapping matches, in words (`syncd check-config`); `directories` are the LDAP sources' names."""
    dn = is_dn(group)
    if sources is None:
        ldap = f"LDAP {', '.join(directories)}; " if directories else ""
        if dn:
            return f"the directory group with this DN ({ldap}imported files), never a SCIM displayName"
        if not tenants:
            return f"directory groups with this CN ({ldap}imported files)"
        return f"SCIM groups of {', '.join(tenants)} with this displayName (and imported files' groups of this name)"
    named_directories = [name for name in sources if name not in tenants]
    named_tenants = [name for name in sources if name in tenants]
    parts = []
    if named_directories:
        parts.append(f"groups of {' or '.join(named_directories)} with this {'DN' if dn else 'CN'}")
    if named_tenants:
        parts.append(
            f"SCIM groups of {' or '.join(named_tenants)} with this displayName{' (a DN string)' if dn else ''}"
        )
    return "; ".join(parts)


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
    #: the sources whose groups the grant's mapping matches (None: any source, by the kind of its group key)
    sources: frozenset[str] | None = None
    #: the mapping's group is a DN (see is_dn)
    dn_key: bool = False
    #: the mapping wins over a grant kept in the directory for the same group (issue 9)
    authoritative: bool = False


@dataclass(frozen=True, slots=True)
class IdentityConflict:
    """An identity refused because another person holds its email or user_id (the holder keeps it)."""

    kind: str  # "email" | "user_id"
    value: str  # the email or user_id both claim
    refused: Identity
    holder: Identity

    def describe(self) -> str:
        """One line for the plan, `explain` and the logs."""
        refused, holder = self.refused, self.holder
        same = refused.source == holder.source
        where = f"another person of {holder.source}" if same else f"a person of source {holder.source}"
        hint = "" if same else " (if both sources describe the same people, set identity.merge_by: email)"
        if self.kind == "user_id":
            return (
                f"user_id {self.value!r} of {refused.source} (external id {refused.external_id}) is already held by "
                f"{where} (external id {holder.external_id}): refused, the holder keeps it{hint}"
            )
        return (
            f"email {self.value!r} of {refused.source} {refused.user_id!r} (external id {refused.external_id}) is "
            f"already held by {where}, {holder.user_id!r} (external id {holder.external_id}): {refused.user_id!r} "
            f"is refused (not created; if already provisioned, left as last applied){hint}"
        )


@dataclass(frozen=True, slots=True)
class MappingRules:
    """The mapping configuration, as plain data: grants by group key, defaults, and what to do with the unmapped."""

    grants_by_group: Mapping[str, Sequence[Grant]]
    defaults: Mapping[str, Any]
    source_priorities: Mapping[str, int] = field(default_factory=dict)
    #: the sources that are SCIM tokens (every other source is a directory: LDAP or an imported file)
    scim_sources: frozenset[str] = frozenset()
    #: "none": people of different sources are never merged; "email": merged by email (see identify_people)
    merge_by: str = "none"
    #: the sources merged with each other under merge_by "email" (None: every source)
    merge_sources: frozenset[str] | None = None


@dataclass(slots=True)
class DesiredState:
    """The result of the mapping: who should exist in LiteLLM and how, who is present but in no mapped group."""

    users: dict[str, DesiredUser] = field(default_factory=dict)
    unmapped: dict[str, Identity] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: identities refused for an email or user_id another person holds
    conflicts: list[IdentityConflict] = field(default_factory=list)
    #: user_ids of refused identities that no one else claims: left exactly as they are (never suspended)
    held: set[str] = field(default_factory=set)
    #: user_id -> (source, external_id) of every identity of a person merged from several (identity.merge_by)
    merged: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def desired_state(
    identities: Iterable[Identity],
    groups: Iterable[Group],
    rules: MappingRules,
    *,
    email_owners: Mapping[str, str] | None = None,
) -> DesiredState:
    """Compute every person's desired LiteLLM user from their identities, groups and the mapping rules.

    `email_owners` (lower-case email -> user_id) names the LiteLLM user that carries an email now: an identity of
    that user_id holds the email before any other (see identify_people).
    """
    state = DesiredState()
    # groups in the order _combine_for lists them, so that a group's position is its rank and a member's list of
    # positions comes out sorted
    ranked = sorted(groups, key=lambda g: (g.source, g.name.lower()))
    groups_of = _groups_by_member(ranked)
    granting = {i for i, group in enumerate(ranked) if grants_for([group], rules)}
    names = [_group_label(group, rules) for group in ranked]
    # people whose groups give the same grants get the same values: combine each distinct set of granting groups
    # once (with thousands of groups, nearly every person's full set of groups is different)
    combined: dict[tuple[int, ...], _Combined] = {}
    nothing: dict[str, list[int]] = {}
    people, state.conflicts = identify_people(identities, rules, email_owners=email_owners)
    for person in people:
        winner = person[0]
        if len(person) > 1:
            state.merged[winner.user_id] = tuple((i.source, i.external_id) for i in person)
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
        if entry.values is None:
            state.unmapped[winner.user_id] = winner
        else:
            state.users[winner.user_id] = _desired_user(winner, entry, tuple(map(names.__getitem__, found)))
    for n, conflict in enumerate(state.conflicts):
        if n < _PROBLEMS_SHOWN:
            state.problems.append(conflict.describe())
        user_id = conflict.refused.user_id
        if user_id not in state.users and user_id not in state.unmapped:
            state.held.add(user_id)
    if len(state.conflicts) > _PROBLEMS_SHOWN:
        state.problems.append(
            f"... and {len(state.conflicts) - _PROBLEMS_SHOWN} more identity conflicts (each refused identity is left "
            "as it is; `syncd explain USER` shows one)"
        )
    return state


def identify_people(
    identities: Iterable[Identity], rules: MappingRules, *, email_owners: Mapping[str, str] | None = None
) -> tuple[list[list[Identity]], list[IdentityConflict]]:
    """The people (each a list of identities, the one that describes them first) and the identities refused.

    See the module docstring for the rules. An email is held first by the identity whose user_id `email_owners`
    names for it (the LiteLLM user carrying it now). Only identities that share an email or a user_id are ranked:
    everyone else is their own person at the cost of a dict lookup.
    """
    people, conflicts = _people_by_email(identities, rules, email_owners or {})
    priorities = rules.source_priorities
    for person in people:
        if len(person) > 1:
            person.sort(key=lambda i: (-priorities.get(i.source, 0), i.source, i.external_id))
    first: dict[str, list[Identity]] = {}
    contested: dict[str, list[list[Identity]]] = {}
    for person in people:
        claimant = first.setdefault(person[0].user_id, person)
        if claimant is not person:
            contested.setdefault(person[0].user_id, [claimant]).append(person)
    if contested:
        refused: set[int] = set()
        for claimants in contested.values():
            claimants.sort(key=lambda p: min(map(_recorded_order, p)))
            holder = claimants[0][0]
            for person in claimants[1:]:
                conflicts.extend(IdentityConflict("user_id", holder.user_id, i, holder) for i in person)
                refused.add(id(person))
        people = [person for person in people if id(person) not in refused]
    conflicts.sort(key=lambda c: (c.kind, c.value.lower(), _recorded_order(c.refused)))
    return people, conflicts


def _people_by_email(
    identities: Iterable[Identity], rules: MappingRules, owners: Mapping[str, str]
) -> tuple[list[list[Identity]], list[IdentityConflict]]:
    """Identities into people: one per identity, but merged by email where the rules say so; email clashes refused."""
    people: list[list[Identity]] = []
    by_email: dict[str, list[Identity]] = {}
    for identity in identities:
        email = identity.email.lower()
        if not email:
            people.append([identity])
            continue
        same = by_email.get(email)
        if same is None:
            by_email[email] = same = []
            people.append(same)  # the holder's person, filled below
        same.append(identity)
    conflicts: list[IdentityConflict] = []
    for email, same in by_email.items():
        if len(same) > 1:
            _share_email(email, same, rules, owners, people, conflicts)
    return people, conflicts


def _share_email(
    email: str,
    same: list[Identity],
    rules: MappingRules,
    owners: Mapping[str, str],
    people: list[list[Identity]],
    conflicts: list[IdentityConflict],
) -> None:
    """Identities with one email: the holder first, then each merged with the holder, refused, or on its own.

    `same` is the holder's person in `people`: it keeps the holder and the identities merged with it.
    """
    owner = owners.get(email)
    ranked = sorted(same, key=lambda i: (not i.active, i.user_id != owner, *_recorded_order(i)))
    holder = ranked[0]
    same[:] = [holder]
    merging = rules.merge_by == "email" and _merges(holder.source, rules)
    for identity in ranked[1:]:
        if merging and _merges(identity.source, rules) and all(o.source != identity.source for o in same):
            same.append(identity)
        elif identity.active:
            conflicts.append(IdentityConflict("email", identity.email, identity, holder))
        else:  # disabled: needs no email, claims nothing but its own user_id
            people.append([identity])


def _merges(source: str, rules: MappingRules) -> bool:
    return rules.merge_sources is None or source in rules.merge_sources


def _recorded_order(identity: Identity) -> tuple[bool, int, str, str]:
    """First recorded first; identities not recorded yet (a snapshot planned before it is recorded) after them."""
    recorded = identity.recorded
    return (recorded is None, recorded or 0, identity.source, identity.external_id)


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
        mapped = _mapped(group, rules)
        grants.extend(mapped)
        if group.grant and not any(grant.authoritative for grant in mapped):
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


def _mapped(group: Group, rules: MappingRules) -> list[Grant]:
    """The config mappings that match this group, by its name (CN, displayName) or by its DN."""
    found = [g for g in rules.grants_by_group.get(normalise_group_key(group.name), ()) if _matches(g, group, rules)]
    if group.dn:
        by_dn = rules.grants_by_group.get(normalise_group_key(group.dn), ())
        found.extend(g for g in by_dn if g not in found and _matches(g, group, rules, by_dn=True))
    return found


def _matches(grant: Grant, group: Group, rules: MappingRules, *, by_dn: bool = False) -> bool:
    if grant.sources is not None and group.source not in grant.sources:
        return False
    scim = group.source in rules.scim_sources
    if by_dn:
        return not scim  # only a directory group has a DN
    if not grant.dn_key:
        return True  # a CN or a displayName
    # a displayName (or a CN) that looks like a DN: never by default, so that no SCIM tenant can take an LDAP
    # group's grants by naming a group after its DN; only where the mapping names the SCIM source itself
    return scim and grant.sources is not None


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


def _group_label(group: Group, rules: MappingRules) -> str:
    """How a person's group is named in their DesiredUser.groups: a directory group by its DN, a SCIM group by its
    displayName, except a displayName that looks like a DN, which is labelled with its source so that nothing that
    matches by DN (a team's `admin_groups`) can take it for the directory group of that DN."""
    if group.dn or group.source not in rules.scim_sources or not is_dn(group.name):
        return group.dn or group.name
    return f"{group.name} (SCIM group of {group.source})"


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
    for order, mapping in enumerate(settings.mappings):
        key = normalise_group_key(mapping.group)
        values = {name: getattr(mapping, name) for name in GRANT_FIELDS}
        values["models"] = tuple(values["models"]) if values["models"] is not None else None
        values["teams"] = tuple(values["teams"] or ())
        values["metadata"] = dict(mapping.metadata)
        sources = frozenset(mapping.sources) if mapping.sources is not None else None
        grant = Grant(
            FieldOrigin("mapping", mapping.group),
            values,
            mapping.priority,
            order,
            sources=sources,
            dn_key=is_dn(mapping.group),
            authoritative=mapping.authoritative,
        )
        grants.setdefault(key, []).append(grant)
    defaults = {name: getattr(settings.defaults, name, None) for name in GRANT_FIELDS if name != "teams"}
    identity = settings.identity
    return MappingRules(
        grants,
        defaults,
        settings.source_priorities,
        scim_sources=frozenset(settings.scim.source_names),
        merge_by=identity.merge_by,
        merge_sources=frozenset(identity.merge_sources) if identity.merge_sources is not None else None,
    )
