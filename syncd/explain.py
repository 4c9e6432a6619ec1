"""`syncd explain USER`: why a person gets exactly what they get, and what would change it.

Gathers, for one person: their identities by source, their groups, every grant that applies with where it came from
(config mapping, group attribute, personal override), the resulting LiteLLM fields each with its winning source,
what syncd last applied, what LiteLLM holds now (one read), and the change the next sync would make.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from syncd.desired import desired_from
from syncd.litellm import LiteLLM
from syncd.mapping import DesiredState, IdentityConflict, grants_for, rules_from_settings
from syncd.model import CurrentUser, Group, Identity
from syncd.plan import PlanPolicy, bind, make_plan
from syncd.settings import Settings
from syncd.store.repository import SyncStore

__all__ = ["UnknownPerson", "explain", "render_explanation"]

_FIELDS = ("role", "models", "tpm_limit", "rpm_limit", "max_budget", "budget_duration", "auto_create_keys", "teams")


class UnknownPerson(Exception):
    """No identity in the store has this user_id or email."""


def _hits(identities: list[Identity], who: str) -> list[Identity]:
    lowered = who.lower()
    return [i for i in identities if i.user_id == who or i.email.lower() == lowered or i.external_id == who]


def _person(state: DesiredState, identities: list[Identity], hits: list[Identity]) -> list[Identity]:
    """The person of the first identity found: with the identities the mapping merged with it (identity.merge_by).

    Identities of different sources are one person only when the mapping merged them.
    """
    by_key = {_key(i): i for i in identities}
    for hit in hits:
        for keys in state.merged.values():
            if _key(hit) in keys:
                return [by_key[key] for key in keys if key in by_key]
    return hits[:1]


def explain(settings: Settings, store: SyncStore, client: LiteLLM | None, who: str) -> dict[str, Any]:
    """Everything about one person, as JSON-ready data (client None: LiteLLM is not read)."""
    identities, groups = store.load_people()
    hits = _hits(identities, who)
    if not hits:
        raise UnknownPerson(f"no identity has the user_id, email or external id {who!r}")
    rules = rules_from_settings(settings)
    state = desired_from(store, rules, identities, groups)
    person = _person(state, identities, hits)
    keys = {(i.source, i.external_id) for i in person}
    member_of = sorted(
        (g for g in groups if any((g.source, m) in keys for m in g.members)), key=lambda g: (g.source, g.name.lower())
    )
    desired = next((state.users[i.user_id] for i in person if i.user_id in state.users), None)
    if desired is not None and (desired.source, desired.external_id) not in keys:
        desired = None  # refused: the user_id is another person's
    name = desired.user_id if desired else person[0].user_id
    # the binding: the user_id this person was created with, whatever the source calls them now
    bound = store.records_bound_to(keys)
    user_id = next(iter(sorted(bound)), name)
    records = {**store.load_managed({user_id, name}), **bound}
    binding = bind(_only(state, name), records)
    managed = records.get(user_id) if user_id in bound or user_id not in binding.refused else None
    known = store.load_conflicts({user_id, name})
    read = client.read_users([user_id]) if client is not None else []
    current = {u.user_id: u for u in read if u.user_id == user_id}
    plan = make_plan(
        binding.desired,
        {user_id: managed} if managed else {},
        current,
        PlanPolicy(
            adopt_existing=settings.policy.adopt_existing,
            deactivation=settings.policy.deactivation,
            unmapped_users=settings.policy.unmapped_users,
            allow_mass_deactivation=True,
        ),
        read=[user_id] if client is not None else [],
        binding=binding,
        known=known,
    )
    return {
        "user_id": user_id,
        "binding": None
        if managed is None
        else {"user_id": user_id, "source": managed.source, "external_id": managed.external_id, "source_says": name},
        "known_conflicts": [vars_of(c) for c in known.values()],
        "identities": [_identity(i) for i in person],
        "groups": [_group(g, _path(store, person, g, groups), bool(grants_for([g], rules))) for g in member_of],
        "conflicts": [_conflict(c) for c in state.conflicts if keys & {_key(c.refused), _key(c.holder)}],
        "grants": [
            {
                "origin": f"{g.origin.kind} {g.origin.name}",
                "priority": g.priority,
                "values": {
                    k: list(v) if isinstance(v, tuple) else v for k, v in g.values.items() if v not in (None, (), {})
                },
            }
            for g in grants_for(member_of, rules)
        ],
        "desired": _desired(desired),
        "unmapped": desired is None and user_id in state.unmapped and _key(state.unmapped[user_id]) in keys,
        "last_applied": None
        if managed is None
        else {
            "state": managed.state,
            "fields": dict(managed.applied),
            "blocked_keys": list(managed.blocked_keys),
            "adopted": managed.adopted,
        },
        "litellm": None if client is None else (_as_read(current[user_id]) if current else "absent"),
        "next_change": [change.to_dict() for change in plan.changes],
    }


def vars_of(conflict: Any) -> dict[str, Any]:
    """A stored conflict as JSON-ready data."""
    return {name: getattr(conflict, name) for name in ("user_id", "kind", "reason", "other", "source", "external_id")}


def _only(state: Any, user_id: str) -> Any:
    from syncd.mapping import DesiredState

    only = DesiredState()
    if user_id in state.users:
        only.users[user_id] = state.users[user_id]
    if user_id in state.unmapped:
        only.unmapped[user_id] = state.unmapped[user_id]
    only.held = state.held & {user_id}
    return only


def _identity(identity: Identity) -> dict[str, Any]:
    return {
        "source": identity.source,
        "external_id": identity.external_id,
        "user_id": identity.user_id,
        "email": identity.email,
        "name": identity.display_name,
        "active": identity.active,
        "dn": identity.dn,
        "overrides": dict(identity.overrides),
    }


def _group(group: Group, path: list[str], counts: bool) -> dict[str, Any]:
    return {
        "source": group.source,
        "name": group.name,
        "dn": group.dn,
        "grant": dict(group.grant),
        "via": path,
        "counts": counts,  # a mapping (of a source it names) or a grant kept on the group applies
    }


def _key(identity: Identity) -> tuple[str, str]:
    return identity.source, identity.external_id


def _conflict(conflict: IdentityConflict) -> dict[str, Any]:
    return {
        "kind": conflict.kind,
        "value": conflict.value,
        "refused": {"source": conflict.refused.source, "external_id": conflict.refused.external_id},
        "holder": {"source": conflict.holder.source, "external_id": conflict.holder.external_id},
        "message": conflict.describe(),
    }


def _path(store: SyncStore, person: list[Identity], group: Group, groups: list[Group]) -> list[str]:
    """The nested groups through which the person is in `group`, outermost first ([] for a direct member)."""
    identity = next((i for i in person if i.source == group.source and i.external_id in group.members), None)
    if identity is None:
        return []
    via = store.memberships_of(identity.source, identity.external_id)
    names = {g.external_id: g.name for g in groups if g.source == group.source}
    path: list[str] = []
    step = via.get(group.external_id)
    while step is not None and step not in path and len(path) < 100:
        path.append(step)
        step = via.get(step)
    return [names.get(step, step) for step in path]


def _desired(desired: Any) -> dict[str, Any] | None:
    if desired is None:
        return None
    values = {
        "role": desired.role,
        "models": list(desired.models),
        "tpm_limit": desired.tpm_limit,
        "rpm_limit": desired.rpm_limit,
        "max_budget": desired.max_budget,
        "budget_duration": desired.budget_duration,
        "auto_create_keys": desired.auto_create_keys,
        "teams": list(desired.teams),
    }
    return {
        name: {"value": values[name], "from": asdict(desired.origins[name]) if name in desired.origins else None}
        for name in _FIELDS
    } | {"active": {"value": desired.active, "from": {"kind": "source", "name": desired.source}}}


def render_explanation(data: dict[str, Any]) -> str:
    """The explanation for a person at a terminal."""
    lines = [f"{data['user_id']}"]
    lines.append("identities:")
    for i in data["identities"]:
        lines.append(
            f"  {i['source']}: {i['user_id']} <{i['email']}> {'active' if i['active'] else 'DISABLED'}"
            + (f" ({i['dn']})" if i["dn"] else "")
            + (f" overrides {i['overrides']}" if i["overrides"] else "")
        )
    lines.append("groups:" if data["groups"] else "groups: none")
    lines.extend(
        f"  {g['source']}: {g['dn'] or g['name']}"
        + ("" if g["counts"] else "  (no mapping or grant of this source matches it)")
        + (f"  (through {' > '.join(g['via'])})" if g["via"] else "")
        + (f"  grant {g['grant']}" if g["grant"] else "")
        for g in data["groups"]
    )
    lines.extend(f"conflict: {c['message']}" for c in data["conflicts"])
    lines.append("grants that apply:" if data["grants"] else "grants that apply: none (in no mapped group)")
    lines.extend(
        f"  {g['origin']}" + (f" (priority {g['priority']})" if g["priority"] else "") + f": {g['values']}"
        for g in data["grants"]
    )
    if data["desired"]:
        lines.append("what LiteLLM should hold:")
        for name, item in data["desired"].items():
            origin = item["from"]
            lines.append(
                f"  {name:<17} {item['value']!s:<40} "
                + (f"<- {origin['kind']} {origin['name']}" if origin else "(not set)")
            )
    elif data["unmapped"]:
        lines.append("not provisioned: in no mapped group (policy.unmapped_users decides what happens if managed)")
    binding = data.get("binding")
    if binding:
        lines.append(
            f"bound: user_id {binding['user_id']} <- {binding['source']} {binding['external_id']} (made at creation)"
            + (
                f"; the source now says {binding['source_says']}"
                if binding["source_says"] != binding["user_id"]
                else ""
            )
        )
    for conflict in data.get("known_conflicts") or []:
        lines.append(f"known conflict ({conflict['kind']}): {conflict['reason']}")
    applied = data["last_applied"]
    lines.append(
        "last applied: never"
        if applied is None
        else f"last applied: {applied['state']}"
        + (" (adopted)" if applied["adopted"] else "")
        + (f", keys blocked by syncd: {len(applied['blocked_keys'])}" if applied["blocked_keys"] else "")
    )
    if data["litellm"] is not None:
        held = data["litellm"]
        lines.append(
            "LiteLLM now: absent"
            if held == "absent"
            else f"LiteLLM now: role {held.get('user_role')}, models {held.get('models')}, budget "
            f"{held.get('max_budget')} {held.get('budget_duration') or ''}, scim_active "
            f"{(held.get('metadata') or {}).get('scim_active', True)}"
        )
    if data["next_change"]:
        for change in data["next_change"]:
            lines.append(f"next sync: {change['action']}: {change['reason']}")
            lines.extend(
                f"  {d['field']}: {d['before']} -> {d['after']}" for d in change["diffs"] if d["field"] != "metadata"
            )
    else:
        lines.append("next sync: nothing to change")
    return "\n".join(lines)


def _as_read(user: CurrentUser) -> dict[str, Any]:
    """A LiteLLM user as syncd read it."""
    return {"user_id": user.user_id, **user.fields, "metadata": dict(user.metadata)}
