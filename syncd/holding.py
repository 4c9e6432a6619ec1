"""The guard in a reconcile run: judge the plan, keep held plans as objects, record what was deactivated.

`RunGuard(store, policy, clock)` is made once per run. `judge(plan, active)` weighs the plan against the per-run
limit and the rolling window (`guard.judge`, with the deactivation history of the store). `settle(...)` then
decides, with the stored held plans, what the run applies (`Holding`): everything but the held deactivations (an
approved plan's deactivations apply, when they are still the same); it stores a new held plan, keeps a pending or
rejected one, supersedes the ones whose inputs changed. `note(change, status)` sees each outcome; `finish(run_id)`
records the deactivations done (for the window) and closes the approved plan as applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from syncd.guard import GuardLimits, HeldPlanView, Verdict, applicable, change_from_dict, decide, decide_targeted, judge
from syncd.plan import Change, Plan
from syncd.store.held import HeldPlan

__all__ = ["Holding", "RunGuard"]

log = logging.getLogger(__name__)

_SHOWN = ("action", "user_id", "source", "external_id", "reason")


@dataclass(slots=True)
class Holding:
    """What a run does about its deactivations."""

    #: the plan the run applies
    plan: Plan
    #: the deactivations that wait
    held: tuple[Change, ...] = ()
    reason: str | None = None
    #: the stored held plan that holds them (or the approved one this run applies)
    plan_id: int | None = None
    #: True when this run stored `plan_id` as a new held plan (a notifier's "held plan" event)
    new: bool = False
    #: the approved plan whose changes this run applies
    approved_id: int | None = None
    #: unix time a run would find the window open again for the held deactivations (None: waiting does not help)
    retry_at: float | None = None
    #: a targeted run held deactivations: a run of everyone should weigh them and store the held plan
    needs_full_run: bool = False
    superseded: tuple[int, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the held plan of the run, if any."""
        return {
            "plan_id": self.plan_id,
            "new": self.new,
            "approved_id": self.approved_id,
            "reason": self.reason,
            "retry_at": self.retry_at,
            "superseded": list(self.superseded),
            "held": [{k: getattr(c, k) for k in _SHOWN} for c in self.held],
        }


class RunGuard:
    """The deactivation guard of one reconcile run."""

    def __init__(self, store: Any, policy: Any, clock: Callable[[], float]) -> None:
        self.store, self.clock = store, clock
        self.limits = GuardLimits(policy.max_deactivations, policy.max_deactivation_ratio, policy.deactivation_window)
        self.allow = False
        self._approved: set[int] = set()  # id() of the approved changes applied now: not counted by the window
        self._done: list[tuple[str, str, bool]] = []
        self._holding: Holding | None = None

    def judge(self, plan: Plan, active: int, *, allow: bool = False) -> Verdict:
        """The guard's verdict on `plan` (reads the deactivations of the window from the store)."""
        self.allow = allow
        now = self.clock()
        recent = self.store.counted_deactivations(now - self.limits.window_s) if plan.deactivations else []
        return judge(plan, recent=recent, active=active, limits=self.limits, now=now, allow=allow)

    def settle(self, plan: Plan, verdict: Verdict, run_id: int | None, *, targeted: bool) -> Holding:
        """Decide with the stored held plans what this run applies; store or keep the held plan."""
        stored = self.store.held_plans()
        if targeted:
            decision = decide_targeted(verdict, open_plans=bool(stored))
            holding = Holding(applicable(plan, decision), decision.held, decision.reason)
            holding.needs_full_run = bool(decision.held)
            holding.retry_at = verdict.retry_at
            return self._keep(holding)
        decision = decide(verdict, [_view(p) for p in stored])
        holding = Holding(applicable(plan, decision), decision.held, decision.reason, decision.plan_id)
        holding.superseded, holding.retry_at = decision.superseded, verdict.retry_at if decision.held else None
        self.store.close_held_plans(decision.superseded, "superseded", run_id=run_id)
        if decision.approved:
            holding.approved_id = decision.plan_id
            self._approved = {id(c) for c in verdict.deactivations}
        elif decision.held and decision.plan_id is None:
            assert decision.reason is not None and verdict.digest is not None
            holding.plan_id = self.store.hold_plan(
                run_id=run_id, reason=decision.reason, digest=verdict.digest, changes=decision.held
            )
            holding.new = True
            log.error("deactivations held as plan %d: %s", holding.plan_id, decision.reason)
        elif decision.held:
            self.store.still_held(decision.plan_id, run_id=run_id, reason=verdict.reason)
        return self._keep(holding)

    def _keep(self, holding: Holding) -> Holding:
        self._holding = holding
        return holding

    def note(self, change: Any, status: str) -> None:
        """One applied change's outcome: deactivations done are kept for the history."""
        if status == "done" and isinstance(change, Change) and change.action in ("suspend", "delete"):
            counted = change.guarded and not self.allow and id(change) not in self._approved
            self._done.append((change.user_id, change.action, counted))

    def finish(self, run_id: int | None, *, completed: bool) -> None:
        """Record the deactivations done; close the approved plan as applied once its changes were all tried (one
        that failed is planned again by the next run, and weighed by the guard as any other)."""
        self.store.record_deactivations(self._done, run_id=run_id, at=self.clock())
        self._done = []
        holding = self._holding
        if holding is not None and holding.approved_id is not None and completed:
            self.store.close_held_plans([holding.approved_id], "applied", run_id=run_id)
            log.warning("held plan %d applied (approved)", holding.approved_id)


def _view(plan: HeldPlan) -> HeldPlanView:
    """A stored held plan as guard.decide weighs it."""
    return HeldPlanView(plan.id, plan.status, plan.digest, tuple(map(change_from_dict, plan.changes)))
