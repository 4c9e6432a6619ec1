"""The plan is what apply sends: in each scenario, `syncd plan`'s plan equals the plan `syncd sync` then runs, and
its changes equal the fake LiteLLM's log of the write calls that sync made: the same changes, nothing more."""

from __future__ import annotations

from collections import Counter
from typing import Any

from syncd.plan import Action, AnyChange, Change, Plan, render_json
from syncd.reconcile import Reconciler
from syncd.testing.fake_litellm import Call

from .conftest import PEOPLE, TEAMS, TeamWorld

Sent = tuple[str, str, str | None]  # (path, user_id or key, team_id)


def sent_by(change: AnyChange, open_keys: dict[str, list[str]]) -> list[Sent]:
    """The write calls one planned change stands for (none for what only the store records); a block_keys change
    blocks the keys syncd blocked before and those LiteLLM shows unblocked when it runs (`open_keys`)."""
    if isinstance(change, Change):
        user = {
            Action.CREATE: "/user/new",
            Action.ADOPT: "/user/update",
            Action.UPDATE: "/user/update",
            Action.REACTIVATE: "/user/update",
            Action.SUSPEND: "/user/update",
            Action.DELETE: "/user/delete",
        }
        if change.action in user:
            return [(user[change.action], change.user_id, None)]
        if change.action == Action.BLOCK_KEYS:
            keys = dict.fromkeys([*change.blocked_keys, *open_keys.get(change.user_id, [])])
            return [("/key/block", key, None) for key in keys]
        if change.action == Action.UNBLOCK_KEYS:
            return [("/key/unblock", key, None) for key in change.blocked_keys]
        return []
    team = {Action.CREATE_TEAM: "/team/new", Action.UPDATE_TEAM: "/team/update"}
    member = {
        Action.ADD_MEMBER: "/team/member_add",
        Action.UPDATE_MEMBER: "/team/member_update",
        Action.REMOVE_MEMBER: "/team/member_delete",
    }
    if change.action in team:
        return [(team[change.action], None, change.team_id)]
    if change.action in member:
        return [(member[change.action], change.user_id, change.team_id)]
    return []  # adopt_team, forget_member, conflicts: nothing to send


def received(call: Call) -> Sent:
    """A write call of the fake's log in the same form."""
    body: dict[str, Any] = call.body or {}
    if call.path == "/user/delete":
        (user_id,) = body["user_ids"]
        return (call.path, user_id, None)
    if call.path.startswith("/user/"):
        return (call.path, body["user_id"], None)
    if call.path.startswith("/key/"):
        return (call.path, body["key"], None)
    if call.path == "/team/member_add":
        return (call.path, body["member"]["user_id"], body["team_id"])
    return (call.path, body.get("user_id"), body["team_id"])


def planned_then_synced(world: TeamWorld) -> Plan:
    """Plan (as `syncd plan`), sync (as `syncd sync`), and check that both are one plan and the calls are its own."""
    plan, _ = Reconciler(world.settings, world.store, world.client).plan()
    open_keys = {u: [k["token"] for k in world.fake.keys_of(u) if not k["blocked"]] for u in world.fake.users}
    world.fake.reset_calls()
    report = world.sync()
    assert report.status == "success", report.report.to_dict()
    assert render_json(report.report.plan) == render_json(plan)
    writes = [call for call in world.fake.calls if call.method != "GET"]
    assert all(call.status == 200 for call in writes), writes
    assert Counter(received(call) for call in writes) == Counter(
        sent for c in plan.steps for sent in sent_by(c, open_keys)
    )
    return plan


def actions(plan: Plan) -> Counter[str]:
    return Counter(str(change.action) for change in plan.steps)


def test_every_change_of_the_plan_is_one_call_and_every_call_is_a_change(world: TeamWorld) -> None:
    world.fake.add_user("erin", user_email="erin@example.com")  # a LiteLLM user syncd does not manage
    world.record({**PEOPLE, "erin": {"groups": ["llm-users"]}})
    first = planned_then_synced(world)
    assert actions(first) == {"create": 3, "conflict": 1, "create_team": 2, "add_member": 4}

    # a suspension (its keys blocked), a move between teams, changed team settings and member budgets
    budget = [{**TEAMS[0], "max_budget": 800.0, "team_member_budget": 30.0}]
    world.configure(teams=budget)
    moved = {
        "bob": {**PEOPLE["bob"], "active": False},
        "carol": {"groups": ["llm-admins"]},
        "dave": {"groups": ["llm-users"]},  # created, and a member once created
    }
    world.record({**PEOPLE, **moved})
    world.fake.add_key("bob")
    second = planned_then_synced(world)
    assert actions(second) == {
        "suspend": 1,
        "block_keys": 1,
        "create": 1,
        "update_team": 1,
        "update_member": 2,  # alice's, and bob's: a suspended user keeps their teams
        "remove_member": 1,
        "add_member": 1,
    }
    (joins,) = [c for c in second.teams if c.action == "add_member"]
    assert joins.user_id == "dave" and joins.depends_on == ("user:dave",)
    assert world.fake.keys_of("bob") and all(key["blocked"] for key in world.fake.keys_of("bob"))
    assert world.member_budget("platform", "alice") == 30.0

    # a reactivation (the keys syncd blocked unblocked first), a deletion, the deleted user's memberships forgotten
    world.configure(teams=budget, policy={"deactivation": "delete", "max_deactivation_ratio": 1.0})
    world.record({**{k: v for k, v in PEOPLE.items() if k != "alice"}, **moved, "bob": PEOPLE["bob"]})
    third = planned_then_synced(world)
    assert actions(third) == {"unblock_keys": 1, "reactivate": 1, "delete": 1, "forget_member": 1}
    assert not any(key["blocked"] for key in world.fake.keys_of("bob"))
    assert world.members("platform") == {"bob", "dave"} and world.members("research") == {"bob"}
    (forget,) = [c for c in third.teams if c.action == "forget_member"]
    assert forget.user_id == "alice" and forget.depends_on == ("user:alice",)

    assert planned_then_synced(world).empty
