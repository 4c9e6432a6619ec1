"""The desired state from the store: the people and groups it recorded (with fresh snapshots in place of their
sources), mapped, their identity conflicts resolved with what the store knows. Reads the store, writes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from syncd.mapping import DesiredState, MappingRules, desired_state
from syncd.model import Group, Identity, Snapshot
from syncd.store.repository import SyncStore

__all__ = ["desired_from", "overlay"]


def overlay(
    identities: list[Identity], groups: list[Group], snapshots: Iterable[Snapshot]
) -> tuple[list[Identity], list[Group]]:
    """The store's people with complete full snapshots put in place of their sources (plan without recording)."""
    for snapshot in snapshots:
        if not snapshot.complete or snapshot.incremental:
            continue
        identities = [i for i in identities if i.source != snapshot.source] + list(snapshot.identities)
        groups = [g for g in groups if g.source != snapshot.source] + list(snapshot.groups)
    return identities, groups


def desired_from(
    store: SyncStore, rules: MappingRules, identities: list[Identity], groups: list[Group]
) -> DesiredState:
    """The mapping of these people, its identity conflicts resolved with what the store knows.

    Who holds a contested email or user_id (mapping.identify_people) depends on what the identities alone cannot
    say: the order in which the store first recorded them (a fresh snapshot's identities carry none), and which
    LiteLLM user carries the email now (so that a person who changes their email to another's never takes it from
    them). Both are read only for the identities in conflict, and the mapping runs again only when there are some.
    """
    state = desired_state(identities, groups, rules)
    if not state.conflicts:
        return state
    involved = [i for c in state.conflicts for i in (c.refused, c.holder)]
    unordered = {(i.source, i.external_id) for i in involved if i.recorded is None}
    order = store.recorded_ids(unordered) if unordered else {}
    contested = {i.user_id for c in state.conflicts if c.kind == "email" for i in (c.refused, c.holder)}
    owners: dict[str, str] = {}
    for user_id, record in store.load_managed(contested).items() if contested else ():
        email = record.applied.get("user_email")
        if record.state != "deleted" and isinstance(email, str) and email:
            owners[email.lower()] = user_id
    if not order and not owners:
        return state
    if order:
        identities = [
            replace(i, recorded=order[(i.source, i.external_id)])
            if i.recorded is None and (i.source, i.external_id) in order
            else i
            for i in identities
        ]
    return desired_state(identities, groups, rules, email_owners=owners)
