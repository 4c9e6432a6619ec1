"""The Reconciler plans users and teams as one plan, applies it as one, reports it, and holds it whole."""

from __future__ import annotations

from typing import Any

from syncd.reconcile import ReconcileOptions, Reconciler, RunReport

from .conftest import PEOPLE, TeamWorld


def _run(world: TeamWorld, **options: Any) -> RunReport:
    options.setdefault("drift_check", False)
    return Reconciler(world.settings, world.store, world.client).run(ReconcileOptions(**options))


def test_a_sync_reports_its_teams_with_its_users_and_records_them_in_the_run(world: TeamWorld) -> None:
    world.record(PEOPLE)
    report = _run(world)
    data = report.to_dict()
    assert data["status"] == "success" and data["applied"]["by_action"] == {
        "create": 3,
        "create_team": 2,
        "add_member": 4,
    }
    assert data["plan"]["teams"]["summary"]["add_member"] == 4
    summary = world.store.recent_runs(1)[0].summary
    assert summary["teams"]["plan"]["create_team"] == 2 and summary["applied"]["failed"] == 0


def test_a_dry_run_previews_the_members_of_users_it_would_create(world: TeamWorld) -> None:
    world.record(PEOPLE)
    report = _run(world, dry_run=True)
    assert report.status == "dry_run" and report.plan.team_counts()["add_member"] == 4
    creates = {c.ref for c in report.plan.changes if c.action == "create"}
    for change in report.plan.teams:
        if change.action == "add_member":  # each membership waits for its user's create
            assert (
                f"user:{change.user_id}" in change.depends_on
                and set(change.depends_on) - {f"team:{change.key}"} <= creates
            )
    assert world.fake.teams == {} and world.fake.users == {}


def test_a_held_run_leaves_the_teams_of_the_held_people_alone(world: TeamWorld) -> None:
    people = {f"u{i:02}": {"groups": ["llm-users"]} for i in range(30)}
    world.record(people)
    _run(world)
    world.record(dict(list(people.items())[:10]))
    world.fake.reset_calls()
    report = _run(world)
    assert report.status == "held"
    assert not [c for c in world.fake.calls if c.path.startswith("/team/") and c.method != "GET"]
    assert len(world.members("platform")) == 30


def test_a_failed_team_change_fails_the_run(world: TeamWorld) -> None:
    world.configure(teams=[{"alias": "platform", "admin_groups": ["llm-admins"]}])
    world.record(PEOPLE)
    report = _run(world)
    assert report.status == "failed" and report.exit_code == 1
    assert report.applied is not None  # the users themselves were fine: only the team admin failed
    [(what, action, _)] = report.applied.errors
    assert (what, action) == ("team platform carol", "add_member")


def test_a_targeted_run_changes_only_its_users_memberships(world: TeamWorld) -> None:
    world.record(PEOPLE)
    _run(world)
    world.record({**PEOPLE, "alice": {"groups": []}, "dave": {"groups": ["llm-users"]}})
    report = _run(world, user_ids=("dave",))
    assert [(c.action, c.user_id) for c in report.plan.teams] == [("add_member", "dave")]
    assert world.members("platform") == {"alice", "bob", "carol", "dave"}
