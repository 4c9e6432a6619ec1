"""What a run's outcome tells the people watching: the notification events of one reconcile.

`RunWatch` looks at the store before a run (the last finished runs, the stored conflicts) and at the run's report
after it, and sends through a `Notifier`:
- `held_plan`: the deactivation guard held deactivations as a new held plan (once per plan; a report without a
  held plan, from before them: again only when the held reason changes);
- `conflict`: the run met conflicts that were not stored before it;
- `run_failed`: a run failed after one that did not (a daemon retrying does not repeat it);
- `recovered`: a run succeeded after a failed one;
- `drift_corrected`: a run undid changes made in LiteLLM by hand (found by the drift check, or by reading the
  users a run was about to change).
Held runs count neither as failed nor as recovered; what they applied (the rest of their plan) may still give
`conflict` and `drift_corrected`. The events carry counts, user_ids, reasons and LiteLLM's error
texts, never the plan's field values (metadata, key tokens) and never a secret. A watch never raises: a problem
reading the store or building an event is logged, and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from syncd.logs import one_line
from syncd.notify import Event, Notifier

__all__ = ["DRIFT_REASONS", "Before", "RunWatch", "events_of"]

log = logging.getLogger(__name__)

_LISTED = 20  # users, errors or problems listed in one event (the rest are counted)
_TEXT_LIMIT = 500
_RECENT_RUNS = 50
_FINISHED = frozenset({"success", "failed", "held"})
#: what the plan's reasons say of a change that undoes one made in LiteLLM by hand (syncd/plan.py)
DRIFT_REASONS = ("drift in LiteLLM corrected", "missing in LiteLLM: created again", "(changed by hand)")


@dataclass(frozen=True, slots=True)
class Before:
    """What the store said before a run: the last finished run, whether runs were failing, the stored conflicts."""

    last_status: str | None = None
    last_held: str | None = None
    failing: bool = False
    conflicts: frozenset[tuple[str, str, str | None]] | None = None


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def _run(report: Any, trigger: str) -> dict[str, Any]:
    return {
        "id": report.run_id,
        "trigger": trigger,
        "status": report.status,
        "seconds": round(float(report.seconds), 3),
        "drift_check": bool(report.drift_checked),
    }


def _conflict_key(conflict: Any) -> tuple[str, str, str | None]:
    return (str(conflict.user_id), str(conflict.kind), conflict.other)


def _counted(items: list[str], noun: str) -> str:
    shown = ", ".join(items[:5])
    return shown + (f" and {len(items) - 5} more {noun}" if len(items) > 5 else "")


def held_event(report: Any, trigger: str) -> Event:
    """The deactivation guard held this run's deactivations (as a held plan: `report.holding`)."""
    plan, holding = report.plan, getattr(report, "holding", None)
    reason = _short(plan.held)
    deactivations = int(getattr(plan, "deactivations", 0))
    details: dict[str, Any] = {"reason": reason, "deactivations": deactivations, "changes": dict(plan.counts())}
    if holding is None or holding.plan_id is None:
        text = (
            f"run {report.run_id} is held by the deactivation guard: {reason}. Nothing was deactivated. If the "
            "removals are real, run `syncd sync --allow-mass-deactivation` (or raise policy.max_deactivations); "
            "otherwise fix the source"
        )
        return Event("held_plan", text, {"run": _run(report, trigger), "held": details})
    plan_id, people = holding.plan_id, [f"{c.action} {c.user_id}" for c in holding.held]
    details |= {
        "plan_id": plan_id,
        "held": len(holding.held),
        "people": [
            {"user_id": c.user_id, "action": str(c.action), "source": c.source, "reason": _short(c.reason)}
            for c in holding.held[:_LISTED]
        ],
    }
    text = (
        f"run {report.run_id} held {len(holding.held)} deactivation(s) as held plan {plan_id} "
        f"({_counted(people, 'people')}): {reason}. The rest of the run was applied. Approve it on the status page "
        f"or with `syncd approve {plan_id}`, reject it with `syncd reject {plan_id}`, or fix the source"
    )
    return Event("held_plan", text, {"run": _run(report, trigger), "held": details})


def conflict_event(report: Any, trigger: str, new: list[Any]) -> Event:
    """Conflicts this run met that the store did not hold before it."""
    listed = [
        {"user_id": c.user_id, "source": c.source, "kind": c.kind, "reason": _short(c.reason), "other": c.other}
        for c in new[:_LISTED]
    ]
    names = [f"{c.user_id} ({c.kind})" for c in new]
    text = (
        f"run {report.run_id} met {len(new)} new conflict(s), nothing is written for them until they are resolved: "
        f"{_counted(names, 'people')}. See `syncd explain USER`"
    )
    return Event("conflict", text, {"run": _run(report, trigger), "conflicts": listed, "count": len(new)})


def failed_event(report: Any, trigger: str) -> Event:
    """The run failed: changes LiteLLM refused or could not take, a source that could not be pulled."""
    applied = report.applied
    errors = list(applied.errors) if applied is not None else []
    # one plan, one applier: a team or membership change names its team ("team ALIAS [user_id]")
    team_failed = sum(1 for what, _action, _error in errors if what.startswith("team "))
    failed = (applied.failed if applied is not None else 0) - team_failed
    problems = [_short(p) for p in report.problems[:_LISTED]]
    listed = [{"user_id": u, "action": a, "error": _short(e)} for u, a, e in errors[:_LISTED]]
    parts = []
    if failed or team_failed:
        parts.append(f"{failed} change(s) and {team_failed} team change(s) failed")
    if errors:
        user, action, error = errors[0]
        parts.append(f"first: {action} {user}: {_short(error)}")
    parts.extend(problems[:3])
    text = f"run {report.run_id} failed: " + ("; ".join(parts) or "see the logs") + ". It is retried"
    details = {"failed_changes": failed, "failed_team_changes": team_failed, "errors": listed, "problems": problems}
    return Event("run_failed", text, {"run": _run(report, trigger), "failure": details})


def raised_event(exc: BaseException, trigger: str) -> Event:
    """The run stopped on an error (LiteLLM or the database away): nothing more was changed."""
    error = _short(one_line(exc))
    text = f"a run ({trigger}) failed: {error}. Nothing more was changed; it is retried"
    run = {"id": None, "trigger": trigger, "status": "failed", "seconds": None, "drift_check": None}
    return Event("run_failed", text, {"run": run, "failure": {"error": error}})


def recovered_event(report: Any, trigger: str) -> Event:
    """A run succeeded after failed ones."""
    text = f"run {report.run_id} succeeded: syncd has recovered from the failed runs before it"
    return Event("recovered", text, {"run": _run(report, trigger)})


def _drift_changes(report: Any) -> list[Any]:
    """The changes of the run that undid a change made in LiteLLM by hand, and were applied."""
    failed = {(user, action) for user, action, _error in report.applied.errors} if report.applied else set()
    return [
        change
        for change in report.plan.changes
        if any(marker in change.reason for marker in DRIFT_REASONS) and (change.user_id, change.action) not in failed
    ]


def drift_event(report: Any, trigger: str) -> Event | None:
    """Changes made in LiteLLM by hand were undone (None when there were none)."""
    changes = _drift_changes(report) if report.applied is not None else []
    if not changes:
        return None
    listed = [{"user_id": c.user_id, "action": c.action, "reason": _short(c.reason)} for c in changes[:_LISTED]]
    names = [f"{c.action} {c.user_id}" for c in changes]
    how = "the drift check" if report.drift_checked else "run"
    text = (
        f"{how} (run {report.run_id}) undid {len(changes)} change(s) made in LiteLLM by hand: "
        f"{_counted(names, 'users')}"
    )
    details = {"count": len(changes), "changes": listed}
    return Event("drift_corrected", text, {"run": _run(report, trigger), "drift": details})


def events_of(report: Any, before: Before, trigger: str) -> Iterator[Event]:
    """The events one finished run's report gives, against what the store said before it."""
    status = report.status
    if status == "held":
        holding = getattr(report, "holding", None)
        if holding is not None:  # a run of some users only stores no plan: the run of everyone it asks for does
            if holding.new:
                yield held_event(report, trigger)
        elif not (before.last_status == "held" and before.last_held == report.plan.held):
            yield held_event(report, trigger)
    if before.conflicts is not None:
        new = [c for c in report.conflicts if _conflict_key(c) not in before.conflicts]
        if new:
            yield conflict_event(report, trigger, new)
    if status == "failed" and not before.failing:
        yield failed_event(report, trigger)
    if status == "success" and before.failing:
        yield recovered_event(report, trigger)
    if status in ("success", "failed", "held"):
        drift = drift_event(report, trigger)
        if drift is not None:
            yield drift


def _before(runs: Iterable[Any]) -> Before:
    """From the latest runs (newest first): the last finished one, and whether the last non-held one failed."""
    last_status = last_held = None
    failing = None
    for run in runs:
        if run.status not in _FINISHED:
            continue
        if last_status is None:
            last_status, last_held = run.status, run.error
        if run.status != "held":
            failing = run.status == "failed"
            break
    return Before(last_status, last_held, bool(failing))


class RunWatch:
    """Sends the events of each run of one store through a notifier; `before_run`, then `after_run` or `raised`."""

    def __init__(self, notifier: Notifier, store: Any) -> None:
        self.notifier, self.store = notifier, store
        self._before = Before()
        self._trigger = "cli"
        self._last = Before()  # what the previous run of this process left, when the store cannot tell

    def before_run(self, trigger: str) -> None:
        """Read what the store says before a run starts."""
        self._trigger = trigger
        try:
            before = _before(self.store.recent_runs(_RECENT_RUNS))
        except Exception as exc:  # the database may be away: this process's memory will do
            log.warning("notifications: could not read the last runs: %s", one_line(exc))
            before = self._last
        conflicts = None
        if self.notifier.wants("conflict"):
            try:
                conflicts = frozenset(map(_conflict_key, self.store.load_conflicts().values()))
            except Exception as exc:
                log.warning("notifications: could not read the stored conflicts: %s", one_line(exc))
        self._before = Before(before.last_status, before.last_held, before.failing, conflicts)

    def after_run(self, report: Any) -> None:
        """Send the events of this run's report (a dry run sends none)."""
        if report.status == "dry_run":
            return
        try:
            for event in events_of(report, self._before, self._trigger):
                self.notifier.send(event)
        except Exception as exc:  # a notification must never fail a run
            log.error("notifications: could not tell run %s's outcome: %s", report.run_id, one_line(exc))
        failing = self._before.failing if report.status == "held" else report.status == "failed"
        self._last = Before(report.status, report.plan.held, failing)

    def raised(self, exc: BaseException) -> None:
        """The run stopped on an error: `run_failed`, unless runs were failing already."""
        try:
            if not self._before.failing:
                self.notifier.send(raised_event(exc, self._trigger))
        except Exception as error:
            log.error("notifications: could not tell a failed run: %s", one_line(error))
        self._last = Before("failed", None, True)
