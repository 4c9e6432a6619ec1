"""The team applier against LiteLLM answers that change between plan and apply: taken ids, races, deleted teams."""

from __future__ import annotations

from syncd.apply import Applier, ApplyResult
from syncd.plan import MARKER, Plan, team_id_for
from syncd.reconcile import Reconciler
from syncd.store.tables import managed_teams

from .conftest import PEOPLE, TeamWorld


def _plan(world: TeamWorld) -> Plan:
    plan, _ = Reconciler(world.settings, world.store, world.client).plan()
    return plan


def _apply(world: TeamWorld, plan: Plan) -> ApplyResult:
    run_id = world.store.start_run("test")
    return Applier(world.client, world.store, run_id=run_id, concurrency=4).apply(plan)


def _users_only(world: TeamWorld) -> None:
    """Create the users (the team step runs too, then its teams are removed again)."""
    world.record(PEOPLE)
    world.sync()
    for team_id in list(world.fake.teams):
        world.fake.remove_team(team_id)
    with world.store.engine.begin() as conn:
        conn.execute(managed_teams.delete())


def test_a_team_id_taken_after_planning_fails_its_create_and_the_next_plan_picks_another(world: TeamWorld) -> None:
    _users_only(world)
    plan = _plan(world)
    world.fake.add_team(team_id_for("research"), team_alias="someone else's")
    result = _apply(world, plan)
    assert not result.ok and result.by_action == {"create_team": 1, "add_member": 3}
    [(what, action, error)] = result.errors
    assert (what, action) == ("team research", "create_team") and "already exists" in error
    assert result.skipped == 1  # bob's membership of research waited for the create
    assert "research" not in world.teams.load_teams()
    report = world.sync()
    assert report.status == "success" and world.members("research") == {"bob"}
    assert world.team("research")["team_id"] == team_id_for("research", 1)
    assert world.team("someone else's")["members_with_roles"] == [
        {"user_id": "default_user_id", "user_email": None, "role": "admin"}
    ]


def test_a_team_created_between_plan_and_apply_is_adopted_by_the_next_plan(world: TeamWorld) -> None:
    _users_only(world)
    plan = _plan(world)
    world.fake.add_team(team_id_for("research"), team_alias="research", metadata={"syncd": dict(MARKER)})
    assert not _apply(world, plan).ok
    report = world.sync()
    assert report.status == "success" and report.plan.counts()["adopt_team"] == 1
    assert len(world.fake.teams) == 2 and world.members("research") == {"bob"}


def test_a_member_added_between_plan_and_apply_is_done_and_recorded(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "dave": {"groups": ["llm-power"]}})
    world.sync()  # dave joins
    world.fake.drop_member(world.team("research")["team_id"], "dave")
    plan = _plan(world)
    world.fake.add_member(world.team("research"), world.fake.users["dave"], "user")
    result = _apply(world, plan)
    assert result.ok and result.by_action == {"add_member": 1}
    assert "dave" in world.teams.load_teams()["research"].members


def test_a_member_gone_between_plan_and_apply_is_removed_already(world: TeamWorld) -> None:
    world.configure(policy={"unmapped_users": "ignore"})
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "alice": {"groups": []}})  # unmapped: her user stays, her team goes
    plan = _plan(world)
    assert [(c.action, c.user_id) for c in plan.teams] == [("remove_member", "alice")]
    world.fake.drop_member(world.team("platform")["team_id"], "alice")
    result = _apply(world, plan)
    assert result.ok and "alice" not in world.teams.load_teams()["platform"].members


def test_a_team_deleted_between_plan_and_apply_fails_its_changes_clearly(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "dave": {"groups": ["llm-power"]}})
    world.sync()
    world.fake.drop_member(world.team("research")["team_id"], "dave")
    plan = _plan(world)
    world.fake.remove_team(world.team("research")["team_id"])
    result = _apply(world, plan)
    assert not result.ok
    assert [(what, action) for what, action, _ in result.errors] == [("team research dave", "add_member")]
    assert "404" in result.errors[0][2] and "Team doesn't exist" in result.errors[0][2]
    report = world.sync()
    assert report.status == "success" and world.members("research") == {"bob", "dave"}
