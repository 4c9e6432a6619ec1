"""The team applier against LiteLLM answers that change between plan and apply: taken ids, races, deleted teams."""

from __future__ import annotations

from syncd.reconcile import Reconciler
from syncd.store.tables import managed_teams
from syncd.team_apply import TeamApplier, TeamApplyResult
from syncd.team_plan import TeamPlan
from syncd.team_reconcile import TeamReconciler
from syncd.teams import MARKER, team_id_for

from .conftest import PEOPLE, TeamWorld


def _plan(world: TeamWorld) -> TeamPlan:
    desired = Reconciler(world.settings, world.store, world.client).desired().users
    plan, _ = TeamReconciler(world.settings, world.store, world.client).plan(desired)
    return plan


def _apply(world: TeamWorld, plan: TeamPlan) -> TeamApplyResult:
    run_id = world.store.start_run("test")
    return TeamApplier(world.client, world.teams, run_id=run_id, concurrency=4).apply(plan)


def _users_only(world: TeamWorld) -> None:
    """Create the users (the team step runs too, then its teams are removed again)."""
    world.record(PEOPLE)
    world.sync()
    for team_id in list(world.fake.teams):
        world.fake.remove_team(team_id)
    with world.store.engine.begin() as conn:
        conn.execute(managed_teams.delete())


def test_a_team_id_taken_after_planning_falls_back_to_one_litellm_chooses(world: TeamWorld) -> None:
    _users_only(world)
    plan = _plan(world)
    world.fake.add_team(team_id_for("research"), team_alias="someone else's")
    result = _apply(world, plan)
    assert result.ok and result.by_action == {"create_team": 2, "add_member": 4}
    research = world.team("research")
    assert research["team_id"] != team_id_for("research") and world.members("research") == {"bob"}
    assert world.teams.load_teams()["research"].team_id == research["team_id"]
    assert world.team("someone else's")["members_with_roles"] == [
        {"user_id": "default_user_id", "user_email": None, "role": "admin"}
    ]
    created = next(e for e in world.store.audit_entries(key="team:research") if e["action"] == "create_team")
    assert "is taken: LiteLLM chose one" in created["reason"] and created["after"]["team_id"] == research["team_id"]


def test_a_team_an_interrupted_run_created_is_taken_as_created(world: TeamWorld) -> None:
    _users_only(world)
    plan = _plan(world)
    world.fake.add_team(team_id_for("research"), team_alias="research", metadata={"syncd": dict(MARKER)})
    result = _apply(world, plan)
    assert result.ok and len(world.fake.teams) == 2 and world.members("research") == {"bob"}


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
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "alice": {"groups": []}})  # unmapped: her user stays, her team goes
    plan = _plan(world)
    assert [(c.action, c.user_id) for c in plan.changes] == [("remove_member", "alice")]
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
    assert [(a, u, c) for a, u, c, _ in result.errors] == [("research", "dave", "add_member")]
    assert "404" in result.errors[0][3] and "Team doesn't exist" in result.errors[0][3]
    report = world.sync()
    assert report.status == "success" and world.members("research") == {"bob", "dave"}
