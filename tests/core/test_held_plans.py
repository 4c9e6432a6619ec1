"""Held plans end to end through the reconcile: the fake LiteLLM over real HTTP, on SQLite and the real PostgreSQL.

The guard holds only the deactivations (a new hire still goes through), counts them over a rolling window across
runs, and keeps what it holds as a plan that an approval applies exactly, that a change of its inputs re-plans, and
that a rejection keeps held until the source changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_reconcile_integration import World, running_world

from syncd.reconcile import ReconcileOptions, Reconciler, RunReport


class Clocked(World):
    """The integration world with a clock the test moves (the guard's window is an hour)."""

    now = 1_800_000_000.0

    def sync(self, **options: Any) -> RunReport:
        options.setdefault("drift_check", False)
        reconciler = Reconciler(self.settings, self.store, self.client, clock=lambda: self.now)
        return reconciler.run(ReconcileOptions(**options))

    def suspended(self) -> set[str]:
        return {u for u, data in self.fake.users.items() if data["metadata"].get("scim_active") is False}


@pytest.fixture
def world(database_url: str) -> Iterator[Clocked]:
    with running_world(database_url, Clocked) as w:
        yield w


def people(count: int, *, start: int = 0) -> dict[str, dict[str, Any]]:
    return {f"u{i:03}": {"groups": ["llm-users"]} for i in range(start, count)}


def test_a_new_hire_is_provisioned_while_deactivations_are_held(world: Clocked) -> None:
    staff = people(30)
    world.record(staff)
    assert world.sync().status == "success"
    world.record({**people(10), "new-hire": {"groups": ["llm-users"]}})  # 20 leave, one joins
    report = world.sync()
    assert report.status == "held" and report.exit_code == 3
    assert "new-hire" in world.fake.users and report.applied is not None and report.applied.by_action == {"create": 1}
    assert world.suspended() == set()  # the 20 deactivations wait
    holding = report.holding
    assert holding is not None and holding.new and holding.plan_id is not None and len(holding.held) == 20
    stored = world.store.held_plan(holding.plan_id)
    assert stored is not None and stored.status == "held" and stored.run_id == report.run_id
    assert {c["user_id"] for c in stored.changes} == {f"u{i:03}" for i in range(10, 30)}
    assert all(c["action"] == "suspend" and "no longer in corp" in c["reason"] for c in stored.changes)
    again = world.sync()  # the held run is retried: the same plan, not a new one
    assert again.status == "held" and again.holding is not None
    assert again.holding.plan_id == holding.plan_id and not again.holding.new
    assert [p.id for p in world.store.held_plans()] == [holding.plan_id]


def test_paced_deletions_are_held_by_the_window(world: Clocked) -> None:
    world.record(people(30))
    world.sync()
    held = None
    for left in range(1, 8):  # one leaver a run, 40 s apart: never more than one in a run
        world.now += 40
        world.record(people(30, start=left))
        report = world.sync()
        if report.status == "held":
            held = (left, report)
            break
    assert held is not None and held[0] == 4, "3 of 30 (10%) may leave in an hour; the fourth is held"
    assert world.suspended() == {"u000", "u001", "u002"}
    report = held[1]
    assert report.holding is not None and "3 applied in the last 1h" in (report.holding.reason or "")
    world.now += 3600  # the window moves on: the held deactivation goes through, its plan is superseded
    report = world.sync()
    assert report.status == "success" and world.suspended() == {"u000", "u001", "u002", "u003"}
    assert world.store.held_plans() == []


def _twenty_leave(world: Clocked) -> int:
    """30 people, then 20 of them leave: the id of the plan that holds their deactivations."""
    world.record(people(30))
    world.sync()
    world.record(people(30, start=20))
    held = world.sync().holding
    assert held is not None and held.plan_id is not None and len(held.held) == 20
    return held.plan_id


def test_an_approved_plan_is_applied_exactly_and_audited(world: Clocked) -> None:
    plan_id = _twenty_leave(world)
    world.store.decide_held_plan(plan_id, "approved", by="cli:ops", note="reorg: team 1 moved out")
    report = world.sync(trigger="approve")
    assert report.status == "success" and report.holding is not None and report.holding.approved_id == plan_id
    assert world.suspended() == {f"u{i:03}" for i in range(20)}
    stored = world.store.held_plan(plan_id)
    assert stored is not None and stored.status == "applied" and stored.closed_run_id == report.run_id
    audit = world.store.audit_entries(f"held-plan:{plan_id}")
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("approve", "cli:ops", "reorg: team 1 moved out")
    ]
    # approved deactivations do not count in the window: one more leaver is within the limit
    world.record(people(30, start=21))
    assert world.sync().status == "success" and "u020" in world.suspended()


def test_a_plan_whose_source_changed_before_approval_is_replanned(world: Clocked) -> None:
    first = _twenty_leave(world)
    world.store.decide_held_plan(first, "approved", by="admin (status page)")
    world.record(people(30, start=21))  # one more left after the plan was held
    report = world.sync(trigger="approve")
    assert report.status == "held" and world.suspended() == set()
    assert report.holding is not None and report.holding.new and report.holding.plan_id != first
    assert len(report.holding.held) == 21 and first in report.holding.superseded
    old = world.store.held_plan(first)
    assert old is not None and old.status == "superseded"


def test_a_rejected_plan_stays_held_until_the_source_changes(world: Clocked) -> None:
    world.record(people(30))
    world.sync()
    world.record(people(30, start=5))
    held = world.sync().holding
    assert held is not None and held.plan_id is not None
    world.store.decide_held_plan(held.plan_id, "rejected", by="cli:ops", note="HR export is broken")
    world.configure(policy={"max_deactivation_ratio": 1.0})  # the guard alone would let the five go now
    world.now += 7200
    report = world.sync()
    assert report.status == "held" and world.suspended() == set()
    assert (
        report.holding is not None
        and report.holding.plan_id == held.plan_id
        and "rejected" in str(report.holding.reason)
    )
    world.record(people(30, start=4))  # the source changes, but only for u004: the four others need a new look
    report = world.sync()
    assert report.status == "held" and world.suspended() == set()
    assert report.holding is not None and report.holding.new and len(report.holding.held) == 4
    rejected = world.store.held_plan(held.plan_id)
    assert rejected is not None and rejected.status == "superseded"
    world.store.decide_held_plan(report.holding.plan_id or 0, "rejected", by="cli:ops")
    world.record(people(30))  # the export is fixed: everyone is back, nothing is held any more
    report = world.sync()
    assert report.status == "success" and world.suspended() == set() and world.store.held_plans() == []
