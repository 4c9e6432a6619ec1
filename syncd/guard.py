"""The deactivation guard over time, and what a held plan is. Purely computational: no I/O, no clock.

The guard counts the deactivations a plan would make (suspensions and deletions of active users, `Change.guarded`)
per run and over a rolling window across runs (`policy.deactivation_window`, 1 h by default): a mass deletion paced
slowly is held as surely as one arriving at once. `judge` splits a plan into what applies now (creates, updates,
reactivations, conflicts, deactivations that take no access away) and the deactivations that wait. `decide` says
what a run does with the held part given the stored held plans: apply it (approved with the same inputs), keep it
held (still pending, or rejected), or store it as a new held plan.

A held plan's inputs digest is the digest of the deactivations it holds (action, user, person, reason): the same
source state gives the same digest, a change in who would lose access, or why, gives another.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from syncd.plan import Action, Change, FieldDiff, Plan

__all__ = [
    "OPEN",
    "Decision",
    "GuardLimits",
    "HeldPlanView",
    "Verdict",
    "applicable",
    "change_from_dict",
    "decide",
    "decide_targeted",
    "guarded",
    "held_digest",
    "judge",
]

_DEACTIVATIONS = ("suspend", "delete")
#: the statuses of a held plan whose deactivations still wait (the others: applied, superseded)
OPEN = ("held", "approved", "rejected")
_DIGESTED = ("action", "user_id", "source", "external_id", "reason")


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """The guard's settings as plain data (policy.max_deactivations, max_deactivation_ratio, deactivation_window)."""

    max_deactivations: int = 50
    max_deactivation_ratio: float = 0.10
    window_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard says about one plan."""

    #: the plan without the held deactivations, not held itself: what may apply now
    applies: Plan
    #: the deactivations that wait (empty: nothing held)
    held: tuple[Change, ...] = ()
    #: why they wait
    reason: str | None = None
    #: every guarded deactivation of the plan (held or not) and their digest: a rejected plan holds them still
    deactivations: tuple[Change, ...] = ()
    digest: str | None = None
    #: unix time the window would let the held deactivations through (None: waiting alone does not)
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class HeldPlanView:
    """A stored held plan as `decide` needs it."""

    id: int
    status: str  # held | approved | rejected | applied | superseded
    digest: str
    changes: tuple[Change, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a run does with its guarded deactivations."""

    #: the approved plan applied now: its deactivations are those planned now (the same digest), applied as planned
    approved: bool = False
    #: the deactivations that stay held (empty: none)
    held: tuple[Change, ...] = ()
    #: the stored plan that holds them or is applied now; None with `held`: store a new held plan
    plan_id: int | None = None
    #: why they stay held (the guard's reason, or the rejection)
    reason: str | None = None
    #: the open stored plans this run replaces (their inputs changed, or nothing is held any more)
    superseded: tuple[int, ...] = ()


def guarded(plan: Plan) -> tuple[Change, ...]:
    """The suspensions and deletions of active users in the plan (what the guard counts)."""
    return tuple(c for c in plan.changes if c.action in _DEACTIVATIONS and c.guarded)


def held_digest(changes: Iterable[Change]) -> str:
    """The inputs digest of held deactivations: who, how and why, in a stable order."""
    rows = sorted(map(_key, changes))
    return hashlib.blake2b(json.dumps(rows).encode(), digest_size=16).hexdigest()


def _limit(limits: GuardLimits, active: int) -> int:
    by_ratio = max(1, math.floor(limits.max_deactivation_ratio * active))
    return min(limits.max_deactivations, by_ratio)


def _window_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def judge(
    plan: Plan,
    *,
    recent: Sequence[float],
    active: int,
    limits: GuardLimits,
    now: float,
    allow: bool = False,
) -> Verdict:
    """Split `plan` into what applies now and the deactivations the guard holds.

    `recent`: the unix times of the deactivations the guard counted and that were applied in the window before
    `now` (approved ones are not counted). `active`: the managed users active now. Held when the plan's deactivations
    are over the per-run limit, or with the recent ones over the limit of the window (its ratio weighed against the
    users active at the window's start: those active now and those deactivated since). `allow` holds nothing
    (`--allow-mass-deactivation`).
    """
    deactivations = guarded(plan)
    digest = held_digest(deactivations) if deactivations else None
    clear = replace(plan, held=None)
    if not deactivations or allow:
        return Verdict(clear, deactivations=deactivations, digest=digest)
    count = len(deactivations)
    in_window = sorted(t for t in recent if now - t < limits.window_s)
    reason, retry_at = _per_run(limits, count, active), None
    if reason is None:
        reason, retry_at = _over_window(limits, count, active, in_window)
    if reason is None:
        return Verdict(clear, deactivations=deactivations, digest=digest)
    return Verdict(_without(clear, deactivations), deactivations, reason, deactivations, digest, retry_at)


def _without(plan: Plan, changes: Iterable[Change]) -> Plan:
    """`plan` without `changes` and without what depends on them (a held suspension's `block_keys`, a held delete's
    forgotten memberships): the plan's order meets every dependency, so one pass finds them all."""
    ids = {id(c) for c in changes}
    gone: set[str] = set()
    kept = []
    for change in plan.changes:
        if id(change) in ids or gone.intersection(change.depends_on):
            gone.add(change.ref)
        else:
            kept.append(change)
    teams = []
    for team_change in plan.teams:
        if gone.intersection(team_change.depends_on):
            gone.add(team_change.ref)
        else:
            teams.append(team_change)
    return replace(plan, held=None, changes=tuple(kept), teams=tuple(teams))


def _per_run(limits: GuardLimits, count: int, active: int) -> str | None:
    limit = _limit(limits, active)
    if count <= limit:
        return None
    return (
        f"{count} deactivations planned, over the limit of {limit} per run (policy.max_deactivations "
        f"{limits.max_deactivations}, max_deactivation_ratio {limits.max_deactivation_ratio:g} of {active} active "
        "users); the deactivations wait, the rest of the plan applies. Check the source, then approve the held plan "
        "(syncd approve ID, or the status page), raise the limit, or run once with --allow-mass-deactivation"
    )


def _over_window(
    limits: GuardLimits, count: int, active: int, in_window: Sequence[float]
) -> tuple[str | None, float | None]:
    base = active + len(in_window)
    limit = _limit(limits, base)
    if count + len(in_window) <= limit:
        return None, None
    # waiting lets them through once enough of the recent ones leave the window (never, if they are too many alone)
    excess = count + len(in_window) - limit
    retry_at = in_window[excess - 1] + limits.window_s if excess <= len(in_window) else None
    window = _window_text(limits.window_s)
    reason = (
        f"{count} deactivations planned and {len(in_window)} applied in the last {window}: "
        f"{count + len(in_window)}, over the limit of {limit} per {window} (policy.deactivation_window; "
        f"max_deactivations {limits.max_deactivations}, max_deactivation_ratio {limits.max_deactivation_ratio:g} of "
        f"{base} users active at the window's start); the deactivations wait, the rest of the plan applies. Check "
        "the source, then approve the held plan (syncd approve ID, or the status page), or wait for the window"
    )
    return reason, retry_at


def decide(verdict: Verdict, stored: Sequence[HeldPlanView]) -> Decision:
    """What a run of everyone does with its deactivations, given the open held plans (statuses in OPEN).

    - An approved plan with the digest of the deactivations planned now: they apply (see `applicable`).
    - A rejected plan with that digest: they stay held, whatever the guard says (until the source changes them).
    - Held by the guard, or planning again a deactivation of a rejected plan (the source changed, but not for that
      person: someone must look again): kept under the pending plan with that digest, or under a new one.
    - Every other open plan is superseded: its inputs changed, or the guard no longer holds them.
    """
    same = [p for p in stored if p.status in OPEN and p.digest == verdict.digest and verdict.digest is not None]
    approved = next((p for p in same if p.status == "approved"), None)
    rejected = next((p for p in same if p.status == "rejected"), None)
    pending = next((p for p in same if p.status == "held"), None)
    others = tuple(p.id for p in stored if p.status in OPEN and p.digest != verdict.digest)
    if approved is not None:
        rest = tuple(p.id for p in same if p is not approved)
        return Decision(approved=True, plan_id=approved.id, superseded=others + rest)
    if rejected is not None:
        why = f"held plan {rejected.id} was rejected; its deactivations wait until the source changes them"
        rest = tuple(p.id for p in same if p is not rejected)
        return Decision(held=verdict.deactivations, plan_id=rejected.id, reason=why, superseded=others + rest)
    held, reason = verdict.held, verdict.reason
    if not held:
        refused = {_key(c) for p in stored if p.status == "rejected" for c in p.changes}
        again = [c for c in verdict.deactivations if _key(c) in refused]
        if not again:
            return Decision(superseded=others + tuple(p.id for p in same))
        held = verdict.deactivations
        reason = (
            f"{len(again)} of these {len(held)} deactivations were in a rejected held plan: the source changed, but "
            "not for them; they wait for a decision"
        )
    plan_id = pending.id if pending is not None else None
    rest = tuple(p.id for p in same if p is not pending)
    return Decision(held=held, plan_id=plan_id, reason=reason, superseded=others + rest)


def _key(change: Change) -> tuple[str, ...]:
    return tuple(str(getattr(change, name) or "") for name in _DIGESTED)


def decide_targeted(verdict: Verdict, *, open_plans: bool) -> Decision:
    """A run of some users only (after SCIM writes) stores no held plan: what the guard holds waits for a run of
    everyone. While a held plan is open, every deactivation waits (a rejected plan's people must not leave one by
    one)."""
    if open_plans and verdict.deactivations:
        why = "a held plan is open: deactivations wait for a run of everyone"
        return Decision(held=verdict.deactivations, reason=verdict.reason or why)
    return Decision(held=verdict.held, reason=verdict.reason)


def applicable(plan: Plan, decision: Decision) -> Plan:
    """The plan a run applies: without the deactivations that stay held.

    An approved plan's deactivations apply as planned now, not as stored: the digest says they are the same people
    for the same reasons, and the fields and keys LiteLLM holds now are those a suspension must keep (LiteLLM's
    /user/update replaces metadata wholesale: a stored copy could undo a change made since).
    """
    return _without(plan, decision.held)


_CHANGE_NAMES = {f.name for f in fields(Change)}


def change_from_dict(data: Mapping[str, Any]) -> Change:
    """A change as `Change.to_dict` wrote it (a stored held plan's changes)."""
    values = {name: value for name, value in data.items() if name in _CHANGE_NAMES}
    values["diffs"] = tuple(FieldDiff(**diff) for diff in data.get("diffs") or ())
    values["blocked_keys"] = tuple(data.get("blocked_keys") or ())
    values["depends_on"] = tuple(data.get("depends_on") or ())
    values["action"] = Action(values["action"])
    return Change(**values)
