"""Which events a run's outcome gives (syncd.run_events.events_of), scenario by scenario, on real report objects."""

from __future__ import annotations

from syncd.apply import ApplyResult
from syncd.plan import Action, KnownConflict, Plan
from syncd.reconcile import RunReport
from syncd.run_events import Before, events_of

HELD = "5 deactivations planned, more than max_deactivations (3)"


def _report(status: str, *, held: str | None = None, conflicts: list[KnownConflict] | None = None) -> RunReport:
    applied = None if status == "held" else ApplyResult(failed=1 if status == "failed" else 0)
    if status == "failed":
        applied.errors.append(("alice", "update", "LiteLLM answered 500: Internal Server Error"))  # type: ignore[union-attr]
    return RunReport(7, status, Plan(held=held), applied=applied, conflicts=conflicts or [])


def _kinds(report: RunReport, before: Before) -> list[str]:
    return [event.kind for event in events_of(report, before, "schedule")]


def test_a_failure_is_told_once_per_streak_and_the_recovery_after_it() -> None:
    assert _kinds(_report("failed"), Before("success")) == ["run_failed"]
    assert _kinds(_report("failed"), Before("failed", failing=True)) == []
    assert _kinds(_report("success"), Before("failed", failing=True)) == ["recovered"]
    assert _kinds(_report("success"), Before("success")) == []


def test_held_runs_count_neither_as_failed_nor_as_recovered() -> None:
    assert _kinds(_report("held", held=HELD), Before("failed", failing=True)) == ["held_plan"]
    # failed, then held, then a success: the success is the recovery
    assert _kinds(_report("success"), Before("held", HELD, failing=True)) == ["recovered"]


def test_a_plan_that_stays_held_is_told_again_only_when_its_reason_changes() -> None:
    assert _kinds(_report("held", held=HELD), Before("held", HELD)) == []
    assert _kinds(_report("held", held=HELD.replace("5", "9")), Before("held", HELD)) == ["held_plan"]
    (event,) = events_of(_report("held", held=HELD), Before("success"), "scim")
    assert event.details["held"]["reason"] == HELD and event.details["run"]["trigger"] == "scim"


def test_only_conflicts_not_stored_before_the_run_are_told() -> None:
    known = KnownConflict("ann", "hr", "1", "email_taken", "the email is held by someone-else", "someone-else")
    new = KnownConflict("bob", "hr", "2", "user_id_taken", "held by a user syncd does not manage", "bob")
    stored = frozenset({("ann", "email_taken", "someone-else")})
    (event,) = events_of(_report("success", conflicts=[known, new]), Before("success", conflicts=stored), "cli")
    assert event.kind == "conflict" and event.details["count"] == 1
    assert event.details["conflicts"][0]["user_id"] == "bob" and "bob (user_id_taken)" in event.text
    assert _kinds(_report("success", conflicts=[known]), Before("success", conflicts=stored)) == []


def test_a_failed_run_names_its_first_error_without_field_values() -> None:
    (event,) = events_of(_report("failed"), Before("success"), "cli")
    assert "first: update alice: LiteLLM answered 500" in event.text
    assert event.details["failure"]["errors"] == [
        {"user_id": "alice", "action": "update", "error": "LiteLLM answered 500: Internal Server Error"}
    ]
    assert set(event.details) == {"run", "failure"}


def test_a_held_plan_is_told_once_with_its_id_and_people_and_what_the_run_applied_is_still_told() -> None:
    from syncd.holding import Holding
    from syncd.plan import Change

    leavers = tuple(
        Change(action=Action.SUSPEND, user_id=f"u{i}", reason="no longer in hr", source="hr", external_id=f"e{i}")
        for i in range(3)
    )
    conflict = KnownConflict("bob", "hr", "2", "user_id_taken", "held by a user syncd does not manage", "bob")
    report = _report("held", held=HELD, conflicts=[conflict])
    report.holding = Holding(Plan(), leavers, HELD, plan_id=4, new=True)
    kinds = _kinds(report, Before("success", conflicts=frozenset()))
    assert kinds == ["held_plan", "conflict"]  # the rest of a held run was applied: its news is told too
    (event, _) = events_of(report, Before("success", conflicts=frozenset()), "schedule")
    assert event.details["held"]["plan_id"] == 4 and [p["user_id"] for p in event.details["held"]["people"]] == [
        "u0",
        "u1",
        "u2",
    ]
    assert "syncd approve 4" in event.text and "The rest of the run was applied" in event.text
    report.holding = Holding(Plan(), leavers, HELD, plan_id=4, new=False)  # the same plan, held again
    assert _kinds(report, Before("success")) == []
    report.holding = Holding(Plan(), leavers, HELD, plan_id=None, needs_full_run=True)  # a targeted run
    assert _kinds(report, Before("success")) == []
