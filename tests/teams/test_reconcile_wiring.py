"""The Reconciler runs the team step after the user changes, reports it, and skips it when a run is held."""

from __future__ import annotations

from typing import Any

from syncd.reconcile import ReconcileOptions, Reconciler, RunReport

from .conftest import PEOPLE, TeamWorld


def _run(world: TeamWorld, **options: Any) -> RunReport:
    options.setdefault("drift_check", False)
    return Reconciler(world.settings, world.store, world.client).run(ReconcileOptions(**options))


def test_a_sync_reports_its_team_step_and_records_it_in_the_run(world: TeamWorld) -> None:
    world.record(PEOPLE)
    report = _run(world)
    data = report.to_dict()
    assert data["teams"]["status"] == "success" and data["teams"]["applied"]["by_action"]["add_member"] == 4
    summary = world.store.recent_runs(1)[0].summary
    assert summary["teams"]["plan"]["create_team"] == 2 and summary["teams"]["applied"]["failed"] == 0


def test_a_dry_run_previews_the_members_of_users_it_would_create(world: TeamWorld) -> None:
    world.record(PEOPLE)
    report = _run(world, dry_run=True)
    teams = report.teams
    assert teams is not None and teams.status == "dry_run" and teams.plan.counts()["add_member"] == 4
    assert world.fake.teams == {}


def test_a_held_run_leaves_the_teams_of_the_held_people_alone(world: TeamWorld) -> None:
    people = {f"u{i:02}": {"groups": ["llm-users"]} for i in range(30)}
    world.record(people)
    _run(world)
    world.record(dict(list(people.items())[:10]))
    world.fake.reset_calls()
    report = _run(world)
    assert report.status == "held" and report.teams is not None and not report.teams.plan.changes
    assert not [c for c in world.fake.calls if c.path.startswith("/team/") and c.method != "GET"]
    assert len(world.members("platform")) == 30


def test_a_failed_team_change_fails_the_run(world: TeamWorld) -> None:
    world.configure(teams=[{"alias": "platform", "admin_groups": ["llm-admins"]}])
    world.record(PEOPLE)
    report = _run(world)
    assert report.status == "failed" and report.exit_code == 1
    assert report.applied.ok  # the users themselves were fine


def test_a_targeted_run_changes_only_its_users_memberships(world: TeamWorld) -> None:
    world.record(PEOPLE)
    _run(world)
    world.record({**PEOPLE, "alice": {"groups": []}, "dave": {"groups": ["llm-users"]}})
    report = _run(world, user_ids=("dave",))
    assert report.teams is not None
    assert [(c.action, c.user_id) for c in report.teams.plan.changes] == [("add_member", "dave")]
    assert world.members("platform") == {"alice", "bob", "carol", "dave"}
