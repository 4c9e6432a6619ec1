"""The pure team planner, scenario by scenario, and the property that applying a plan leaves nothing to do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.litellm import current_team
from syncd.model import DesiredUser, ManagedTeam, ManagedUser
from syncd.plan import (
    MARKER,
    Plan,
    TeamChange,
    join,
    plan_teams,
    render_json,
    render_text,
    team_groups_of,
    team_id_for,
)


@dataclass
class Spec:
    """A `teams:` entry as the planner reads it."""

    alias: str
    models: list[str] | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    team_member_budget: float | None = None
    admin_groups: list[str] = field(default_factory=list)
    admin_fallback_to_user: bool = False


def user(user_id: str, *teams: str, active: bool = True, groups: tuple[str, ...] = ()) -> DesiredUser:
    return DesiredUser(
        user_id, f"{user_id}@example.com", "corp", f"x-{user_id}", active, "internal_user", teams=teams, groups=groups
    )


def managed(*user_ids: str, state: str = "active") -> dict[str, ManagedUser]:
    return {u: ManagedUser(u, "corp", f"x-{u}", state, {}) for u in user_ids}


def team(team_id: str, alias: str, *members: str, ours: bool = True, **fields: Any) -> dict[str, Any]:
    return {
        "team_id": team_id,
        "team_alias": alias,
        "metadata": {"syncd": dict(MARKER)} if ours else {"owner": "ops"},
        "members_with_roles": [{"user_id": "default_user_id", "role": "admin"}]
        + [{"user_id": m, "role": "user"} for m in members],
        "team_memberships": [],
        **fields,
    }


class TeamPlan:
    """The team part of a plan, as these tests read it."""

    def __init__(self, whole: Plan) -> None:
        self.whole = whole
        self.changes: tuple[TeamChange, ...] = whole.teams
        self.records = whole.team_records
        self.problems, self.unchanged, self.waiting = whole.problems, whole.teams_unchanged, whole.teams_waiting
        self.empty = not whole.teams

    def counts(self) -> dict[str, int]:
        return self.whole.team_counts()


def plan(
    desired: Sequence[DesiredUser],
    specs: Sequence[Spec] = (),
    current: Sequence[dict[str, Any]] = (),
    records: Sequence[ManagedTeam] = (),
    users: dict[str, ManagedUser] | None = None,
    pending_users: Sequence[str] = (),
    **options: Any,
) -> TeamPlan:
    """The team plan, the users in `pending_users` being created by the same plan (so active once it is applied)."""
    wanted = {u.user_id: u for u in desired}
    users = managed(*wanted) if users is None else users
    states = {uid: m.state for uid, m in users.items()} | dict.fromkeys(pending_users, "active")
    teams = [current_team(t) for t in current]
    return TeamPlan(plan_teams(wanted, specs, teams, {r.alias: r for r in records}, states, **options))


def actions(team_plan: TeamPlan) -> list[tuple[str, str, str | None]]:
    return [(c.action, c.alias, c.user_id) for c in team_plan.changes]


def test_a_team_in_the_teams_section_is_created_with_its_settings_even_without_members() -> None:
    result = plan([], [Spec("Platform", models=["gpt-4o"], max_budget=5.0, budget_duration="monthly")])
    (create,) = result.changes
    assert create.action == "create_team" and create.team_id == team_id_for("Platform")
    assert create.payload == {
        "team_id": team_id_for("Platform"),
        "team_alias": "Platform",
        "metadata": {"syncd": {"managed": True}},
        "models": ["gpt-4o"],
        "max_budget": 5.0,
        "budget_duration": "monthly",
    }
    assert result.records["platform"] == ManagedTeam(
        "platform",
        create.team_id,
        True,
        {"team_alias": "Platform", "models": ["gpt-4o"], "max_budget": 5.0, "budget_duration": "monthly"},
    )


def test_a_team_named_only_by_a_mapping_is_created_once_someone_can_join() -> None:
    assert plan([user("alice", "research")], users={}).changes == ()
    result = plan([user("alice", "research")], users={})
    assert result.waiting == 1
    result = plan([user("alice", "research")], users={}, pending_users={"alice"})
    assert actions(result) == [("create_team", "research", None), ("add_member", "research", "alice")]


def test_aliases_match_case_insensitively_and_the_config_spelling_wins() -> None:
    result = plan([user("alice", "platform"), user("bob", "PLATFORM")], [Spec("Platform")])
    assert actions(result) == [
        ("create_team", "Platform", None),
        ("add_member", "Platform", "alice"),
        ("add_member", "Platform", "bob"),
    ]


def test_an_existing_team_with_the_marker_is_adopted_and_its_drift_corrected() -> None:
    current = [team("t1", "platform", "alice", max_budget=99.0, models=["a", "b"])]
    result = plan([user("alice", "platform")], [Spec("platform", max_budget=10.0, models=["b", "a"])], current)
    assert actions(result) == [("adopt_team", "platform", None), ("update_team", "platform", None)]
    update = result.changes[1]
    assert update.payload == {"team_id": "t1", "max_budget": 10.0}
    assert [(d.field, d.before, d.after) for d in update.diffs] == [("max_budget", 99.0, 10.0)]


def test_a_team_without_the_marker_is_joined_only() -> None:
    current = [team("t1", "platform", "zed", ours=False, max_budget=1.0)]
    result = plan([user("alice", "platform")], [Spec("platform", max_budget=10.0, team_member_budget=3.0)], current)
    assert actions(result) == [("adopt_team", "platform", None), ("add_member", "platform", "alice")]
    assert not result.changes[0].managed and result.changes[1].max_budget_in_team is None
    assert result.records["platform"].managed is False and "joined and left only" in result.problems[0]


def test_members_syncd_did_not_add_are_never_removed() -> None:
    current = [team("t1", "platform", "zed", "alice")]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice"}))
    result = plan([user("zed")], [], current, [record], users=managed("zed", "alice"))
    assert actions(result) == [("remove_member", "platform", "alice")]
    assert result.changes[0].reason == "no longer in a mapped group"


def test_two_foreign_teams_with_one_alias_are_a_conflict_and_left_alone() -> None:
    current = [team("t1", "platform", ours=False), team("t2", "platform", ours=False)]
    result = plan([user("alice", "platform")], [], current)
    assert actions(result) == [("team_conflict", "platform", None)]


def test_of_two_teams_with_one_alias_syncd_takes_its_own() -> None:
    current = [team("t2", "platform", ours=False), team("t1", "platform", "alice")]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice"}))
    assert plan([user("alice", "platform")], [], current, [record]).empty


def test_a_recorded_team_deleted_in_litellm_is_created_again() -> None:
    record = ManagedTeam("platform", "gone", True, {"team_alias": "platform"}, frozenset({"alice"}))
    result = plan([user("alice", "platform")], [], [], [record])
    assert actions(result) == [("create_team", "platform", None), ("add_member", "platform", "alice")]
    assert "created again" in result.changes[0].reason and result.records["platform"].members == frozenset()


def test_a_removed_marker_is_restored_with_the_rest_of_the_metadata() -> None:
    current = [team("t1", "platform", "alice", ours=False)]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice"}))
    (update,) = plan([user("alice", "platform")], [], current, [record]).changes
    assert update.action == "update_team" and update.reason == "syncd's marker restored"
    assert update.payload == {"team_id": "t1", "metadata": {"owner": "ops", "syncd": {"managed": True}}}


def test_an_alias_renamed_in_litellm_is_renamed_back() -> None:
    current = [team("t1", "platform-old", "alice")]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice"}))
    (update,) = plan([user("alice", "platform")], [], current, [record]).changes
    assert update.payload == {"team_id": "t1", "team_alias": "platform"}


def test_suspended_members_stay_unless_the_policy_says_they_leave() -> None:
    current = [team("t1", "platform", "alice")]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice"}))
    for desired, users in (
        ([user("alice", "platform", active=False)], managed("alice")),
        ([user("alice", "platform")], managed("alice", state="suspended")),
        ([], managed("alice", state="suspended")),
    ):
        assert plan(desired, [], current, [record], users=users).empty
        result = plan(desired, [], current, [record], users=users, suspended_leave_teams=True)
        assert actions(result) == [("remove_member", "platform", "alice")]
        assert result.changes[0].reason == "suspended (policy.suspended_leave_teams)"


def test_a_suspended_user_is_not_added() -> None:
    result = plan([user("alice", "platform")], [], [team("t1", "platform")], users=managed("alice", state="suspended"))
    assert actions(result) == [("adopt_team", "platform", None)]


def test_a_deleted_user_is_forgotten_and_one_removed_by_hand_is_added_again() -> None:
    current = [team("t1", "platform")]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice", "bob"}))
    users = {**managed("alice"), **managed("bob", state="deleted")}
    result = plan([user("alice", "platform")], [], current, [record], users=users)
    assert actions(result) == [("add_member", "platform", "alice"), ("forget_member", "platform", "bob")]
    assert "added again" in result.changes[0].reason and result.changes[1].reason == "user deleted from LiteLLM"


def test_the_per_member_budget_is_given_on_join_and_corrected_on_drift() -> None:
    current = [team("t1", "platform", "alice")]
    current[0]["team_memberships"] = [{"user_id": "alice", "litellm_budget_table": {"max_budget": 1.0}}]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice"}))
    spec = Spec("platform", team_member_budget=5.0)
    result = plan([user("alice", "platform"), user("bob", "platform")], [spec], current, [record])
    assert [(c.action, c.user_id, c.max_budget_in_team) for c in result.changes] == [
        ("add_member", "bob", 5.0),
        ("update_member", "alice", 5.0),
    ]
    current[0]["team_memberships"][0]["litellm_budget_table"]["max_budget"] = 5.0
    assert len(plan([user("alice", "platform")], [spec], current, [record]).changes) == 0


def test_members_of_the_admin_groups_join_as_admins() -> None:
    spec = Spec("platform", admin_groups=["CN=Leads, OU=Groups"], admin_fallback_to_user=True)
    desired = [user("alice", "platform", groups=("cn=leads,ou=groups",)), user("bob", "platform")]
    result = plan(desired, [spec], [team("t1", "platform")], [ManagedTeam("platform", "t1", True)])
    assert [(c.user_id, c.role, c.admin_fallback) for c in result.changes] == [
        ("alice", "admin", True),
        ("bob", "user", True),
    ]


def test_a_taken_team_id_moves_to_the_next_one() -> None:
    result = plan([], [Spec("platform")], [team(team_id_for("platform"), "other", ours=False)])
    assert result.changes[0].team_id == team_id_for("platform", 1)


def test_scim_groups_become_teams() -> None:
    result = plan([user("alice")], [], [], groups_as_teams={"alice": ["Data Science"]})
    assert actions(result) == [("create_team", "Data Science", None), ("add_member", "Data Science", "alice")]
    assert "scim.groups_as_teams" in result.changes[1].reason


def test_the_reason_names_the_group_that_gave_the_team() -> None:
    mapping = type("M", (), {"group": "cn=Eng", "teams": ["platform"]})
    desired = [user("alice", "platform", groups=("CN=eng", "cn=other"))]
    result = plan(
        desired,
        [],
        [team("t1", "platform")],
        [ManagedTeam("platform", "t1", True)],
        team_groups=team_groups_of([mapping]),
    )
    assert result.changes[0].reason == "member of CN=eng"


def test_the_plan_renders_for_people_and_scripts() -> None:
    result = plan([user("alice", "platform")], [Spec("platform", max_budget=5.0)])
    text = render_text(result.whole)
    assert text.splitlines()[0] == "Plan: no changes (0 unchanged)."
    assert text.splitlines()[1] == "Teams: 1 create_team, 1 add_member (0 teams unchanged)."
    assert "    max_budget: 5.0" in text and "+ add_member platform alice" in text
    data = render_json(result.whole)["teams"]
    assert data["summary"]["create_team"] == 1 and data["changes"][1]["user_id"] == "alice"


# -- property: applying a plan with the real applier leaves nothing to do --------------------------------------------
_USERS = ["u0", "u1", "u2", "u3", "u4"]
_TEAMS = ["red", "Blue", "green"]


def _planned(proxy: Any, desired: dict[str, DesiredUser], users: dict[str, str], leave: bool) -> Plan:
    """The team plan against what the fake LiteLLM and the store hold now."""
    specs = [Spec("red", max_budget=5.0, team_member_budget=None)]
    teams = proxy.client.read_teams()
    return plan_teams(desired, specs, teams, proxy.store.load_teams(), users, suspended_leave_teams=leave)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rounds=st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(_USERS), st.lists(st.sampled_from(_TEAMS), max_size=3), max_size=5),
            st.dictionaries(st.sampled_from(_USERS), st.sampled_from(["active", "suspended", "deleted"]), max_size=5),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
    hand_made=st.booleans(),
)
def test_applying_a_plan_converges_in_one_step(litellm_proxy: Any, rounds: list[Any], hand_made: bool) -> None:
    """Each round's team plan, applied by the real applier to the fake LiteLLM, leaves nothing to plan; syncd's
    record never names a member LiteLLM lacks; a team syncd did not create is never changed."""
    proxy = litellm_proxy
    proxy.reset()
    for user_id in _USERS:
        proxy.fake.add_user(user_id, user_email=f"{user_id}@example.com")
    if hand_made:
        proxy.fake.add_member(proxy.fake.add_team("h1", team_alias="green"), proxy.fake.users["u3"], "user")
    # who may be in a team without syncd's record: the hand-made team's own member, and users "deleted" (the fake
    # keeps their memberships, which LiteLLM's /user/delete would have taken: syncd only forgets them)
    ghosts = {"default_user_id"} | ({"u3"} if hand_made else set())
    for memberships, states, leave in rounds:
        desired = {u: user(u, *teams) for u, teams in memberships.items()}
        users = {u: states.get(u, "active") for u in _USERS}
        ghosts |= {u for u, state in users.items() if state == "deleted"}
        proxy.apply(join(Plan(), _planned(proxy, desired, users, leave)))
        again = _planned(proxy, desired, users, leave)
        assert not again.teams, [(c.action, c.alias, c.user_id) for c in again.teams]
        live = {t.team_id: t for t in proxy.client.read_teams()}
        for key, record in proxy.store.load_teams().items():
            members = set(live[record.team_id].members)
            assert record.members <= members and members - record.members <= ghosts, key
    assert not (hand_made and proxy.fake.teams["h1"].get("max_budget"))


def test_a_run_for_some_users_changes_no_one_elses_memberships() -> None:
    current = [team("t1", "platform", "alice", "bob")]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice", "bob"}))
    users = managed("alice", "bob", "carol")
    result = plan([user("carol", "platform")], [], current, [record], users=users, only={"carol"})
    assert actions(result) == [("add_member", "platform", "carol")]
    assert actions(plan([user("carol")], [], current, [record], users=users, only={"carol", "bob"})) == [
        ("remove_member", "platform", "bob")
    ]


def test_a_member_budget_litellm_did_not_show_is_not_taken_for_drift() -> None:
    current = [team("t1", "platform", "alice", "bob")]
    current[0]["team_memberships"] = [
        {"user_id": "alice", "budget_id": "b1", "litellm_budget_table": None},
        {"user_id": "bob", "budget_id": "b2"},
    ]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"alice", "bob"}))
    spec = Spec("platform", team_member_budget=5.0)
    assert plan([user("alice", "platform"), user("bob", "platform")], [spec], current, [record]).empty
