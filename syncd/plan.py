"""The plan: desired users against what syncd last applied and what LiteLLM holds. Purely computational.

`make_plan(desired, managed, current, policy)` returns an immutable `Plan`: a list of `Change`s, each naming its
action, the user, the field-level differences with the origin of every new value, and why. Apply executes exactly
these changes and nothing else. `render_text` and `render_json` print a plan as it is.

Comparison base, per user: LiteLLM's own state where it was read (`current`, the users about to change or every
managed user on a drift check), else the store's record of what was last applied.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from syncd.mapping import DesiredState
from syncd.model import CurrentUser, DesiredUser, FieldOrigin, ManagedUser

__all__ = [
    "ACTIONS",
    "USER_FIELDS",
    "Change",
    "FieldDiff",
    "Plan",
    "PlanPolicy",
    "Settling",
    "desired_fields",
    "fields_digest",
    "make_plan",
    "marker",
    "render_json",
    "render_text",
    "settle",
    "settled_users",
    "short_value",
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
ACTIONS = ("create", "adopt", "update", "reactivate", "suspend", "delete", "conflict")
_DEACTIVATIONS = ("suspend", "delete")
_ORIGIN_OF = {
    "user_role": "role",
    "models": "models",
    "tpm_limit": "tpm_limit",
    "rpm_limit": "rpm_limit",
    "max_budget": "max_budget",
    "budget_duration": "budget_duration",
}


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """The policy knobs the plan needs, as plain data."""

    adopt_existing: bool = False
    deactivation: str = "suspend"  # suspend | delete
    delete_after_s: float | None = None
    unmapped_users: str = "ignore"  # ignore | deactivate
    max_deactivations: int = 50
    max_deactivation_ratio: float = 0.10
    allow_mass_deactivation: bool = False
    now: float = 0.0  # unix time, for delete_after


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field that changes: its value before, after, and where the new value came from."""

    field: str
    before: Any
    after: Any
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One planned change to one LiteLLM user."""

    action: str
    user_id: str
    reason: str
    source: str | None = None
    external_id: str | None = None
    #: the full desired LiteLLM fields (create, adopt, update, reactivate), including metadata
    after: Mapping[str, Any] | None = None
    diffs: tuple[FieldDiff, ...] = ()
    #: the fields as last applied (store) or read (LiteLLM) before this change
    before: Mapping[str, Any] | None = None
    #: create only: whether LiteLLM should generate a key
    auto_create_key: bool = False
    #: resume a suspension that was interrupted: the keys syncd had already chosen to block
    blocked_keys: tuple[str, ...] = ()
    adopted: bool = False
    #: False for a deactivation that takes no access away (finishing a suspension, deleting a suspended user)
    guarded: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON-ready data (shallow copies: the plan is immutable, its values plain)."""
        data = {name: getattr(self, name) for name in _CHANGE_FIELDS}
        data["after"] = None if self.after is None else dict(self.after)
        data["before"] = None if self.before is None else dict(self.before)
        data["blocked_keys"] = list(self.blocked_keys)
        data["diffs"] = [
            {"field": d.field, "before": d.before, "after": d.after, "origin": d.origin} for d in self.diffs
        ]
        return data


_CHANGE_FIELDS = tuple(f.name for f in fields(Change))


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes of one reconcile, and why it is held if it is."""

    changes: tuple[Change, ...] = ()
    held: str | None = None
    problems: tuple[str, ...] = ()
    unchanged: int = 0
    unmapped_ignored: int = 0

    def counts(self) -> dict[str, int]:
        """How many changes of each action."""
        counts = dict.fromkeys(ACTIONS, 0)
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        return counts

    @property
    def deactivations(self) -> int:
        """Suspensions and deletions of users that are active now (what the guard counts)."""
        return sum(1 for c in self.changes if c.action in _DEACTIVATIONS and c.guarded)

    @property
    def empty(self) -> bool:
        """True when there is nothing to do."""
        return not self.changes


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


def _same(name: str, want: Any, have: Any) -> bool:
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


def _plain(value: Any) -> Any:
    """A value in a form whose repr does not depend on key order (mappings as sorted pairs, lists as tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, _plain(item)) for key, item in value.items())) if value else ()
    if isinstance(value, list | tuple):
        return tuple(map(_plain, value))
    return value


def fields_digest(fields: Mapping[str, Any]) -> str:
    """A digest of LiteLLM user fields in the form `_same` compares them (e-mail in lower case, models sorted).

    Two sets of fields with the same digest differ in no field, so a managed user whose applied fields have the
    desired fields' digest has nothing to plan (`settled_users`); different digests only mean: compare in full.
    """
    metadata = fields.get("metadata") or {}
    return _digest(_shared_part(fields), _own_part(fields.get("user_email"), fields.get("user_alias"), metadata))


def _shared_part(fields: Mapping[str, Any]) -> str:
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
            _plain({key: value for key, value in metadata.items() if key != "syncd"}),
        )
    )


def _own_part(email: str | None, alias: str | None, metadata: Mapping[str, Any]) -> str:
    return repr(((email or "").lower(), alias, _plain(metadata.get("syncd"))))


def _digest(shared: str, own: str) -> str:
    return hashlib.blake2b(f"{shared}\n{own}".encode(), digest_size=16).hexdigest()


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
            key = (w.role, w.models, w.tpm_limit, w.rpm_limit, w.max_budget, w.budget_duration, _plain(w.metadata))
            part = shared.get(key)
            if part is None:
                part = shared[key] = _shared_part(desired_fields(want))
            # _own_part of desired_fields(want), written out: _plain of the marker is its items in key order (hot)
            own = (("external_id", w.external_id), ("managed", True), ("source", w.source))
            if digest == _digest(part, repr(((w.email or "").lower(), w.user_alias, own))):
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
        if not _same(name, want.get(name), have.get(name)):
            origin = origins.get(_ORIGIN_OF.get(name, ""))
            label = f"{origin.kind} {origin.name}" if origin else None
            diffs.append(FieldDiff(name, have.get(name), want.get(name), label))
    return tuple(diffs)


class _Planner:
    """Builds the change list user by user; a class only to share the inputs between small steps."""

    def __init__(
        self,
        desired: DesiredState,
        managed: Mapping[str, ManagedUser],
        current: Mapping[str, CurrentUser],
        read: Collection[str],
        policy: PlanPolicy,
    ) -> None:
        self.desired, self.managed, self.current, self.read, self.policy = desired, managed, current, read, policy
        self.changes: list[Change] = []
        self.unchanged = 0
        self.unmapped_ignored = 0

    def run(self, only: Collection[str] | None = None, settled: Collection[str] = ()) -> None:
        everyone = set(self.desired.users) | set(self.managed)
        if only is not None:
            everyone &= set(only)
        # refused for an email or user_id another person holds (mapping.IdentityConflict): reported, left as is
        everyone -= self.desired.held
        if settled:
            before = len(everyone)
            everyone -= set(settled)
            self.unchanged += before - len(everyone)
        for user_id in sorted(everyone):
            want = self.desired.users.get(user_id)
            have = self.managed.get(user_id)
            if want is not None and want.active:
                self._keep_active(want, have)
            elif have is not None:
                self._deactivate(user_id, want, have)

    # -- people who should have access --------------------------------------------------------------------------
    def _keep_active(self, want: DesiredUser, have: ManagedUser | None) -> None:
        fields = desired_fields(want)
        current = self.current.get(want.user_id)
        if have is None or have.state == "deleted":
            self._provision(want, fields, current)
            return
        if want.user_id in self.read and current is None:
            self._add(
                Change(
                    "create",
                    want.user_id,
                    "managed but missing in LiteLLM: created again",
                    want.source,
                    want.external_id,
                    fields,
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
                    "reactivate",
                    want.user_id,
                    f"active again in {want.source}",
                    want.source,
                    want.external_id,
                    fields,
                    diffs,
                    base,
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
                    "update",
                    want.user_id,
                    why,
                    want.source,
                    want.external_id,
                    fields,
                    diffs,
                    base,
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
                    "create",
                    want.user_id,
                    f"in {want.source}, member of {groups}",
                    want.source,
                    want.external_id,
                    fields,
                    _diffs(fields, {}, want.origins),
                    auto_create_key=want.auto_create_keys,
                )
            )
            return
        base = dict(current.fields, metadata=current.metadata)
        fields["metadata"] = self._keep_foreign_metadata(fields["metadata"], current)
        diffs = _diffs(fields, base, want.origins)
        if current.managed:
            self._add(
                Change(
                    "adopt",
                    want.user_id,
                    "already in LiteLLM with syncd's marker",
                    want.source,
                    want.external_id,
                    fields,
                    diffs,
                    base,
                    adopted=False,
                )
            )
        elif self.policy.adopt_existing:
            self._add(
                Change(
                    "adopt",
                    want.user_id,
                    "existing LiteLLM user taken over (adopt_existing)",
                    want.source,
                    want.external_id,
                    fields,
                    diffs,
                    base,
                    adopted=True,
                )
            )
        else:
            self._add(
                Change(
                    "conflict",
                    want.user_id,
                    "a LiteLLM user syncd does not manage holds this user_id; "
                    "not touched (set policy.adopt_existing to take it over)",
                    want.source,
                    want.external_id,
                    fields,
                    diffs,
                    base,
                )
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
        elif have.state == "suspending":
            self._add(self._deactivation("suspend", have, f"{reason} (finishing an interrupted suspension)", False))
        elif have.state == "suspended":
            self._maybe_delete_later(have, reason)
        elif self.policy.deactivation == "delete":
            self._add(self._deactivation("delete", have, f"{reason} (policy.deactivation: delete)", True))
        else:
            self._add(self._deactivation("suspend", have, reason, True))

    def _deactivation(self, action: str, have: ManagedUser, reason: str, guarded: bool) -> Change:
        current = self.current.get(have.user_id)
        before = dict(current.fields, metadata=current.metadata) if current is not None else dict(have.applied)
        return Change(
            action,
            have.user_id,
            reason,
            have.source,
            have.external_id,
            before=before,
            blocked_keys=have.blocked_keys,
            adopted=have.adopted,
            guarded=guarded,
        )

    def _why_gone(self, user_id: str, want: DesiredUser | None, have: ManagedUser) -> str | None:
        if want is not None:
            return f"disabled in {want.source}"
        if user_id in self.desired.unmapped:
            if self.policy.unmapped_users != "deactivate":
                return None
            return f"in no mapped group of {self.desired.unmapped[user_id].source} (policy.unmapped_users: deactivate)"
        return f"no longer in {have.source}"

    def _maybe_delete_later(self, have: ManagedUser, reason: str) -> None:
        after = self.policy.delete_after_s
        if after is None or have.suspended_at is None or self.policy.now - have.suspended_at < after:
            return
        why = f"{reason}; suspended for more than {after / 86400:g} days (policy.delete_after)"
        self._add(self._deactivation("delete", have, why, False))

    def _add(self, change: Change) -> None:
        self.changes.append(change)


def _guard(
    plan_changes: list[Change], managed: Mapping[str, ManagedUser], policy: PlanPolicy, active: int | None = None
) -> str | None:
    deactivations = sum(1 for c in plan_changes if c.action in _DEACTIVATIONS and c.guarded)
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
) -> Plan:
    """Plan the changes that bring LiteLLM to the desired state.

    `current` holds the LiteLLM users that were read; `read` the user_ids that were looked up (a looked-up id absent
    from `current` does not exist in LiteLLM). Without them, the store's record of what was applied is the base.
    `only` restricts the plan to these user_ids (a targeted reconcile); the guard still weighs every managed user:
    `managed` may then hold only those users' records, with `active_managed` the count of every active one.
    `settled` (see `settled_users`) are counted unchanged without a look at their records, which `managed` may then
    leave out; they are recorded active, and the guard counts them so.
    """
    current = current or {}
    policy = policy or PlanPolicy()
    if settled and active_managed is None:
        settled = set(settled)
        others = (m for m in managed.values() if m.user_id not in settled)
        active_managed = len(settled) + sum(1 for m in others if m.state == "active")
    planner = _Planner(desired, managed, current, set(read if read is not None else current), policy)
    planner.run(only, settled)
    held = _guard(planner.changes, managed, policy, active_managed)
    return Plan(tuple(planner.changes), held, tuple(desired.problems), planner.unchanged, planner.unmapped_ignored)


# -- rendering ------------------------------------------------------------------------------------------------------
_SYMBOL = {
    "create": "+",
    "adopt": "&",
    "update": "~",
    "reactivate": "^",
    "suspend": "-",
    "delete": "x",
    "conflict": "!",
}


def short_value(value: Any) -> str:
    """A field value as the text renderings print it (lists bracketed, mappings as JSON, None as null)."""
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def render_text(plan: Plan) -> str:
    """The plan for people: a summary line, then each change with its fields and their origins."""
    counts = plan.counts()
    summary = ", ".join(f"{counts[a]} {a}" for a in ACTIONS if counts[a]) or "no changes"
    lines = [f"Plan: {summary} ({plan.unchanged} unchanged)."]
    if plan.held:
        lines.append(f"HELD: {plan.held}")
    for problem in plan.problems:
        lines.append(f"warning: {problem}")
    for change in plan.changes:
        lines.append(f"{_SYMBOL[change.action]} {change.action} {change.user_id}: {change.reason}")
        for diff in change.diffs:
            if diff.field == "metadata":
                continue
            arrow = (
                short_value(diff.after)
                if change.action == "create"
                else f"{short_value(diff.before)} -> {short_value(diff.after)}"
            )
            origin = f"   ({diff.origin})" if diff.origin else ""
            lines.append(f"    {diff.field}: {arrow}{origin}")
    return "\n".join(lines)


def render_json(plan: Plan) -> dict[str, Any]:
    """The plan for scripts."""
    return {
        "summary": plan.counts(),
        "unchanged": plan.unchanged,
        "unmapped_ignored": plan.unmapped_ignored,
        "held": plan.held,
        "problems": list(plan.problems),
        "changes": [change.to_dict() for change in plan.changes],
    }
