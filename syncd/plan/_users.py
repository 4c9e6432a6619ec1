"""The user part of the plan: desired users against what syncd last applied and what LiteLLM holds.

Purely computational. Comparison base, per user: LiteLLM's own state where it was read (`current`, the users about
to change or every managed user on a drift check), else the store's record of what was last applied.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from syncd.fields import (
    USER_FIELDS,
    combine_digest,
    desired_fields,
    fields_digest,
    plain,
    same_field,
    shared_part,
)
from syncd.mapping import DesiredState
from syncd.model import CurrentUser, DesiredUser, FieldOrigin, Identity, KnownConflict, ManagedUser
from syncd.plan._changes import DEACTIVATIONS, Action, Change, FieldDiff, Plan, PlanPolicy

__all__ = ["Binding", "Settling", "bind", "make_plan", "settle", "settled_users", "with_key_changes"]

_INPUTS = (Action.CREATE, Action.ADOPT, Action.UPDATE, Action.REACTIVATE, Action.CONFLICT)
_ORIGIN_OF = {
    "user_role": "role",
    "models": "models",
    "tpm_limit": "tpm_limit",
    "rpm_limit": "rpm_limit",
    "max_budget": "max_budget",
    "budget_duration": "budget_duration",
}


@dataclass(frozen=True, slots=True)
class Binding:
    """The desired state re-keyed by the bindings (source, external id) -> user_id of the managed records."""

    desired: DesiredState
    #: bound user_id -> the user_id the source now gives that person (a rename kept as an update)
    renamed: Mapping[str, str] = field(default_factory=dict)
    #: the source's user_id -> the conflict of a new person arriving with a user_id bound to someone else
    refused: Mapping[str, Change] = field(default_factory=dict)


def bind(desired: DesiredState, managed: Mapping[str, ManagedUser], settled: Collection[str] = ()) -> Binding:
    """Put each desired person at the user_id they are bound to, and refuse user_ids bound to someone else.

    A person is bound to the user_id syncd created or adopted for them, by their (source, external id): a renamed
    uid or userName keeps the bound user_id (LiteLLM cannot rename one). A different person arriving with a user_id
    bound to someone else (a leaver's, suspended or not) is a conflict, never a reactivation. Records of deleted
    users bind nobody, nor do records without an external id. `managed` must hold the records of every desired
    person not in `settled` (see `settle`: a settled person is recorded under their own user_id, bound to them).
    """
    bound_to = {
        (m.source, m.external_id): m.user_id for m in managed.values() if m.external_id and m.state != "deleted"
    }
    if not bound_to:
        return Binding(desired)
    moved: dict[str, DesiredUser] = {}
    renamed: dict[str, str] = {}
    refused: dict[str, Change] = {}
    for name, want in desired.users.items():
        if name in settled:
            continue
        user_id = bound_to.get((want.source, want.external_id))
        if user_id is None:
            have = managed.get(name)
            if have is not None and have.external_id and have.state != "deleted":
                refused[name] = _bound_elsewhere(want, have)  # a newcomer at a user_id bound to someone else
        elif user_id != name:
            renamed[user_id] = name
            moved[user_id] = replace(want, user_id=user_id)
    for user_id in renamed:  # a newcomer named as the bound user_id of someone renamed
        other = desired.users.get(user_id)
        if other is not None and (other.source, other.external_id) not in bound_to:
            refused.setdefault(user_id, _bound_elsewhere(other, managed[user_id]))
    unmapped = _rebind_unmapped(desired.unmapped, bound_to)
    if not moved and not refused and unmapped is desired.unmapped:
        return Binding(desired)
    gone = set(refused) | set(renamed.values())
    users = {name: want for name, want in desired.users.items() if name not in gone}
    users.update(moved)
    return Binding(replace(desired, users=users, unmapped=unmapped), renamed, refused)


def _rebind_unmapped(unmapped: dict[str, Identity], bound_to: Mapping[tuple[str, str], str]) -> dict[str, Identity]:
    """People in no mapped group at their bound user_ids (the same dict when nothing moves)."""
    taken = set(bound_to.values())
    changes = False
    out = {}
    for name, identity in unmapped.items():
        user_id = bound_to.get((identity.source, identity.external_id))
        if user_id is not None:
            changes = changes or user_id != name
            out[user_id] = identity
        elif name not in taken:
            out[name] = identity
        else:
            changes = True  # someone else's bound user_id: not this person's to lose
    return out if changes else unmapped


def _bound_elsewhere(want: DesiredUser, have: ManagedUser) -> Change:
    reason = (
        f"user_id {have.user_id} is bound to {have.source} {have.external_id} ({have.state}); "
        f"{want.source} {want.external_id} is another person and does not get it (no reactivation, blocked keys "
        f"stay blocked). If this is on purpose, release it: syncd release {have.user_id}"
    )
    return Change(
        action=Action.CONFLICT,
        user_id=have.user_id,
        reason=reason,
        source=want.source,
        external_id=want.external_id,
        conflict_kind="bound_elsewhere",
        other=f"{have.source}:{have.external_id}",
    )


@dataclass(slots=True)
class Settling:
    """What the short rows of the store's records say before any whole record is read (see `settle`)."""

    #: the users with nothing to plan
    settled: set[str] = field(default_factory=set)
    #: every other record: user_id -> (state, applied digest)
    others: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: records in state active, the settled included
    active: int = 0


def settle(desired: DesiredState, records: Iterable[tuple[str, str, str | None]], *, enabled: bool = True) -> Settling:
    """Sort the store's records (user_id, state, applied digest) into the settled users and the others.

    Settled: active, and recorded active with the digest of the desired fields (`fields_digest` of `desired_fields`,
    its shared part computed once per distinct set of granted values). A reconcile then reads the whole records of
    the others only, and passes the settled to `make_plan`. `enabled=False` settles nobody (a drift check compares
    everyone with LiteLLM itself). The records are consumed as they come: none is held but the others.
    """
    out = Settling()
    shared: dict[tuple[Any, ...], str] = {}
    users = desired.users
    for user_id, state, digest in records:
        out.active += state == "active"
        want = users.get(user_id)
        if enabled and want is not None and want.active and state == "active" and digest is not None:
            w = want
            key = (w.role, w.models, w.tpm_limit, w.rpm_limit, w.max_budget, w.budget_duration, plain(w.metadata))
            part = shared.get(key)
            if part is None:
                part = shared[key] = shared_part(desired_fields(want))
            # _own_part of desired_fields(want), written out: _plain of the marker is its items in key order (hot)
            own = (("external_id", w.external_id), ("managed", True), ("source", w.source))
            if digest == combine_digest(part, repr(((w.email or "").lower(), w.user_alias, own))):
                out.settled.add(w.user_id)
                continue
        out.others[user_id] = (state, digest)
    return out


def settled_users(desired: DesiredState, managed: Mapping[str, tuple[str, str | None]]) -> set[str]:
    """`settle`'s settled users, from a mapping user_id -> (state, applied digest)."""
    return settle(desired, ((user_id, *record) for user_id, record in managed.items())).settled


def _diffs(
    want: Mapping[str, Any], have: Mapping[str, Any], origins: Mapping[str, FieldOrigin]
) -> tuple[FieldDiff, ...]:
    diffs = []
    for name in USER_FIELDS:
        if name == "models" and not want.get("models"):
            continue  # LiteLLM's /user/update ignores models: []; an empty grant leaves models as they are
        if not same_field(name, want.get(name), have.get(name)):
            origin = origins.get(_ORIGIN_OF.get(name, ""))
            label = f"{origin.kind} {origin.name}" if origin else None
            diffs.append(FieldDiff(name, have.get(name), want.get(name), label))
    return tuple(diffs)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the planner knows besides the desired state and the records (see make_plan's arguments)."""

    binding: Binding | None = None
    known: Mapping[str, KnownConflict] = field(default_factory=dict)
    email_holders: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    unblocked: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class _Planner:
    """Builds the change list user by user; a class only to share the inputs between small steps."""

    def __init__(
        self,
        desired: DesiredState,
        managed: Mapping[str, ManagedUser],
        current: Mapping[str, CurrentUser],
        read: Collection[str],
        policy: PlanPolicy,
        facts: _Facts = _Facts(),
    ) -> None:
        self.desired, self.managed, self.current, self.read, self.policy = desired, managed, current, read, policy
        self.facts = facts
        self.renamed: Mapping[str, str] = facts.binding.renamed if facts.binding is not None else {}
        self.changes: list[Change] = []
        self.unchanged = 0
        self.unmapped_ignored = 0

    def run(self, only: Collection[str] | None = None, settled: Collection[str] = ()) -> None:
        refused = dict(self.facts.binding.refused) if self.facts.binding is not None else {}
        everyone = set(self.desired.users) | set(self.managed)
        if only is not None:
            only = set(only) | {bound for bound, name in self.renamed.items() if name in only}
            everyone &= only
            refused = {name: change for name, change in refused.items() if name in only}
        # refused for an email or user_id another person holds (mapping.IdentityConflict): reported, left as is
        everyone -= self.desired.held
        if settled:
            before = len(everyone)
            everyone -= set(settled)
            self.unchanged += before - len(everyone)
        for user_id in sorted(everyone | set(refused)):
            want = self.desired.users.get(user_id)
            have = self.managed.get(user_id)
            if want is not None and want.active:
                self._keep_active(want, have)
            elif have is not None and user_id in everyone:
                self._deactivate(user_id, want, have)
            if user_id in refused:
                self._add(refused[user_id])

    # -- people who should have access --------------------------------------------------------------------------
    def _keep_active(self, want: DesiredUser, have: ManagedUser | None) -> None:
        fields = desired_fields(want)
        known = self.facts.known.get(want.user_id)
        same = known is not None and (known.source, known.external_id) == (want.source, want.external_id)
        if known is not None and same and known.inputs_digest == self._inputs(want):
            self._add(self._known(known, want, fields))
            return
        current = self.current.get(want.user_id)
        if have is None or have.state == "deleted":
            self._provision(want, fields, current)
            return
        if want.user_id in self.read and current is None:
            self._add(
                Change(
                    action=Action.CREATE,
                    user_id=want.user_id,
                    reason="managed but missing in LiteLLM: created again",
                    source=want.source,
                    external_id=want.external_id,
                    after=fields,
                    auto_create_key=want.auto_create_keys,
                )
            )
            return
        base = dict(current.fields, metadata=current.metadata) if current is not None else dict(have.applied)
        fields["metadata"] = self._keep_foreign_metadata(fields["metadata"], current)
        diffs = _diffs(fields, base, want.origins)
        if have.state in ("suspended", "suspending"):
            self._add(
                Change(
                    action=Action.REACTIVATE,
                    user_id=want.user_id,
                    reason=f"active again in {want.source}",
                    source=want.source,
                    external_id=want.external_id,
                    after=fields,
                    diffs=diffs,
                    before=base,
                    blocked_keys=have.blocked_keys,
                    adopted=have.adopted,
                )
            )
        elif diffs:
            why = (
                "drift in LiteLLM corrected"
                if current is not None and not _diffs(fields, have.applied, {})
                else ("desired fields changed")
            )
            self._add(
                Change(
                    action=Action.UPDATE,
                    user_id=want.user_id,
                    reason=why,
                    source=want.source,
                    external_id=want.external_id,
                    after=fields,
                    diffs=diffs,
                    before=base,
                    adopted=have.adopted,
                )
            )
        else:
            self.unchanged += 1

    def _provision(self, want: DesiredUser, fields: dict[str, Any], current: CurrentUser | None) -> None:
        if current is None:
            groups = ", ".join(want.groups) or "defaults"
            self._add(
                Change(
                    action=Action.CREATE,
                    user_id=want.user_id,
                    reason=f"in {want.source}, member of {groups}",
                    source=want.source,
                    external_id=want.external_id,
                    after=fields,
                    diffs=_diffs(fields, {}, want.origins),
                    auto_create_key=want.auto_create_keys,
                )
            )
            return
        base = dict(current.fields, metadata=current.metadata)
        fields["metadata"] = self._keep_foreign_metadata(fields["metadata"], current)
        diffs = _diffs(fields, base, want.origins)
        if current.managed or self.policy.adopt_existing:
            why = (
                "already in LiteLLM with syncd's marker"
                if current.managed
                else "existing LiteLLM user taken over (adopt_existing)"
            )
            self._add(
                Change(
                    action=Action.ADOPT,
                    user_id=want.user_id,
                    reason=why,
                    source=want.source,
                    external_id=want.external_id,
                    after=fields,
                    diffs=diffs,
                    before=base,
                    adopted=not current.managed,
                )
            )
        else:
            self._add(
                Change(
                    action=Action.CONFLICT,
                    user_id=want.user_id,
                    reason="a LiteLLM user syncd does not manage holds this user_id; "
                    "not touched (set policy.adopt_existing to take it over)",
                    source=want.source,
                    external_id=want.external_id,
                    after=fields,
                    diffs=diffs,
                    before=base,
                    conflict_kind="user_id_taken",
                    other=want.user_id,
                )
            )

    @staticmethod
    def _known(known: KnownConflict, want: DesiredUser, fields: dict[str, Any]) -> Change:
        return Change(
            action=Action.CONFLICT,
            user_id=want.user_id,
            reason=(
                f"{known.reason} (a known conflict: retried when the source changes this person, or on a drift check)"
            ),
            source=want.source,
            external_id=want.external_id,
            after=fields,
            conflict_kind=known.kind,
            other=known.other,
        )

    def _email_taken(self, change: Change) -> Change | None:
        """A create, adoption or email change to an email another LiteLLM user holds: a conflict, not a write."""
        email = (change.after or {}).get("user_email")
        if not email or change.action not in ("create", "adopt", "update", "reactivate"):
            return None
        if change.action in ("update", "reactivate") and not any(d.field == "user_email" for d in change.diffs):
            return None
        holder = self.facts.email_holders.get(str(email).lower())
        if holder is None or holder[0] == change.user_id:
            return None
        whose = "another person syncd manages" if holder[1] else "a LiteLLM user syncd does not manage"
        return Change(
            action=Action.CONFLICT,
            user_id=change.user_id,
            reason=f"the email {email} is held by LiteLLM user {holder[0]}, {whose}; not written "
            "(LiteLLM allows one user per email)",
            source=change.source,
            external_id=change.external_id,
            after=change.after,
            diffs=change.diffs,
            before=change.before,
            conflict_kind="email_taken",
            other=holder[0],
            # a holder syncd manages may give the email up in this very run (two people swapping): retried next run
            inputs_digest=None if holder[1] else change.inputs_digest,
        )

    @staticmethod
    def _keep_foreign_metadata(ours: dict[str, Any], current: CurrentUser | None) -> dict[str, Any]:
        # /user/update replaces metadata wholesale: keep what others put there
        return {**(current.metadata if current is not None else {}), **ours}

    # -- people who should lose access ----------------------------------------------------------------------------
    def _deactivate(self, user_id: str, want: DesiredUser | None, have: ManagedUser) -> None:
        if have.state == "deleted":
            return
        reason = self._why_gone(user_id, want, have)
        if reason is None:
            self.unmapped_ignored += 1
        elif have.state == "suspending":  # LiteLLM was told already (scim_active false): only the keys are left
            why = f"{reason} (finishing an interrupted suspension: the user's keys)"
            self._add(self._deactivation(Action.BLOCK_KEYS, have, why, False))
        elif have.state == "suspended":
            if not self._suspend_again(have, reason):
                self._maybe_delete_later(have, reason)
        elif self.policy.deactivation == "delete":
            self._add(self._deactivation(Action.DELETE, have, f"{reason} (policy.deactivation: delete)", True))
        else:
            self._add(self._deactivation(Action.SUSPEND, have, reason, True))

    def _deactivation(self, action: Action, have: ManagedUser, reason: str, guarded: bool) -> Change:
        current = self.current.get(have.user_id)
        before = dict(current.fields, metadata=current.metadata) if current is not None else dict(have.applied)
        return Change(
            action=action,
            user_id=have.user_id,
            reason=reason,
            source=have.source,
            external_id=have.external_id,
            before=before,
            blocked_keys=have.blocked_keys,
            adopted=have.adopted,
            guarded=guarded,
            suspended_at=have.suspended_at if have.state == "suspended" else None,
        )

    def _why_gone(self, user_id: str, want: DesiredUser | None, have: ManagedUser) -> str | None:
        if want is not None:
            return f"disabled in {want.source}"
        if user_id in self.desired.unmapped:
            if self.policy.unmapped_users != "deactivate":
                return None
            return f"in no mapped group of {self.desired.unmapped[user_id].source} (policy.unmapped_users: deactivate)"
        return f"no longer in {have.source}"

    def _suspend_again(self, have: ManagedUser, reason: str) -> bool:
        """A suspended user LiteLLM shows active again (scim_active, or keys syncd blocked now unblocked): re-apply."""
        current = self.current.get(have.user_id)
        if current is None:
            return False
        unblocked = self.facts.unblocked.get(have.user_id, ())
        if current.metadata.get("scim_active") is False and not unblocked:
            return False
        what = "scim_active is not false" if current.metadata.get("scim_active") is not False else ""
        if unblocked:
            what = ", ".join(filter(None, [what, f"{len(unblocked)} key(s) syncd blocked are unblocked"]))
        why = f"{reason}; suspended, but LiteLLM shows {what} (changed by hand): suspended again"
        self._add(self._deactivation(Action.SUSPEND, have, why, False))
        return True

    def _maybe_delete_later(self, have: ManagedUser, reason: str) -> None:
        after = self.policy.delete_after_s
        if after is None or have.suspended_at is None or self.policy.now - have.suspended_at < after:
            return
        why = f"{reason}; suspended for more than {after / 86400:g} days (policy.delete_after)"
        self._add(self._deactivation(Action.DELETE, have, why, False))

    def _inputs(self, want: DesiredUser) -> str:
        """The digest of what a conflict of this person depends on: their desired fields and adopt_existing."""
        digest = fields_digest(desired_fields(want))
        return digest if not self.policy.adopt_existing else combine_digest(digest, "adopt_existing")

    def _add(self, change: Change) -> None:
        want = self.desired.users.get(change.user_id)
        if want is not None and change.action in _INPUTS and want.external_id == change.external_id:
            change = replace(change, inputs_digest=self._inputs(want))
        change = self._email_taken(change) or change
        name = self.renamed.get(change.user_id)
        if name is not None and change.conflict_kind != "bound_elsewhere":
            note = f"user_id kept as {change.user_id}; {change.source} now says {name}"
            change = replace(change, note=note, reason=f"{change.reason}; {note}")
        self.changes.append(change)


def _guard(
    plan_changes: list[Change], managed: Mapping[str, ManagedUser], policy: PlanPolicy, active: int | None = None
) -> str | None:
    deactivations = sum(1 for c in plan_changes if c.action in DEACTIVATIONS and c.guarded)
    if deactivations == 0 or policy.allow_mass_deactivation:
        return None
    if active is None:
        active = sum(1 for m in managed.values() if m.state == "active")
    by_ratio = max(1, math.floor(policy.max_deactivation_ratio * active))
    limit = min(policy.max_deactivations, by_ratio)
    if deactivations <= limit:
        return None
    return (
        f"{deactivations} deactivations planned, over the limit of {limit} (policy.max_deactivations "
        f"{policy.max_deactivations}, max_deactivation_ratio {policy.max_deactivation_ratio:g} of {active} active "
        "users); nothing applied. Check the source, then raise the limit or run once with "
        "--allow-mass-deactivation"
    )


def make_plan(
    desired: DesiredState,
    managed: Mapping[str, ManagedUser],
    current: Mapping[str, CurrentUser] | None = None,
    policy: PlanPolicy | None = None,
    *,
    read: Collection[str] | None = None,
    only: Collection[str] | None = None,
    active_managed: int | None = None,
    settled: Collection[str] = (),
    binding: Binding | None = None,
    known: Mapping[str, KnownConflict] | None = None,
    email_holders: Mapping[str, tuple[str, bool]] | None = None,
    unblocked: Mapping[str, tuple[str, ...]] | None = None,
) -> Plan:
    """Plan the changes that bring LiteLLM to the desired state.

    `current` holds the LiteLLM users that were read; `read` the user_ids that were looked up (a looked-up id absent
    from `current` does not exist in LiteLLM). Without them, the store's record of what was applied is the base.
    `only` restricts the plan to these user_ids (a targeted reconcile); the guard still weighs every managed user:
    `managed` may then hold only those users' records, with `active_managed` the count of every active one.
    `settled` (see `settled_users`) are counted unchanged without a look at their records, which `managed` may then
    leave out; they are recorded active, and the guard counts them so.

    `binding` (see `bind`) is the desired state put at the bound user_ids, with the refused newcomers; when given,
    its desired state is planned, not `desired`. `known` holds the stored conflicts by user_id: a person whose
    desired fields still have the digest that met one gets that conflict again, nothing written.
    `email_holders` maps lower-cased emails to the LiteLLM user holding them (user_id, managed by syncd): a create
    or an email change to an email someone else holds is a conflict. `unblocked` lists, per suspended user, the
    keys syncd blocked that LiteLLM shows unblocked (drift check): such a user is suspended again.
    """
    if binding is not None:
        desired = binding.desired
    current = current or {}
    policy = policy or PlanPolicy()
    if settled and active_managed is None:
        settled = set(settled)
        others = (m for m in managed.values() if m.user_id not in settled)
        active_managed = len(settled) + sum(1 for m in others if m.state == "active")
    facts = _Facts(binding, known or {}, email_holders or {}, unblocked or {})
    planner = _Planner(desired, managed, current, set(read if read is not None else current), policy, facts)
    planner.run(only, settled)
    held = _guard(planner.changes, managed, policy, active_managed)
    renamed = tuple(sorted(planner.renamed.items()))
    if only is not None:
        renamed = tuple((bound, name) for bound, name in renamed if bound in only or name in only)
    return Plan(
        changes=with_key_changes(planner.changes),
        held=held,
        problems=tuple(desired.problems),
        unchanged=planner.unchanged,
        unmapped_ignored=planner.unmapped_ignored,
        renamed=renamed,
    )


def with_key_changes(changes: Iterable[Change]) -> tuple[Change, ...]:
    """The user changes with their key changes: each suspension's block_keys after it (the keys syncd blocked before,
    an interrupted suspension's, and every key LiteLLM shows unblocked when it runs), each reactivation's
    unblock_keys before it (exactly the keys syncd blocked; its user update waits for them)."""
    out: list[Change] = []
    for change in changes:
        if change.action == Action.SUSPEND:
            why = "the user's keys blocked: suspended (those LiteLLM shows unblocked, and any syncd blocked before)"
            keys = replace(change, action=Action.BLOCK_KEYS, reason=why, guarded=False, depends_on=(change.ref,))
            out.extend((change, keys))
        elif change.action == Action.REACTIVATE and change.blocked_keys:
            why = f"{len(change.blocked_keys)} key(s) syncd blocked unblocked: reactivated"
            keys = replace(change, action=Action.UNBLOCK_KEYS, reason=why, after=None, diffs=())
            out.extend((keys, replace(change, depends_on=(keys.ref,))))
        else:
            out.append(change)
    return tuple(out)
