"""Groups to teams end to end: the fake LiteLLM over real HTTP, the store on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.apply import ADMIN_NEEDS_ENTERPRISE
from syncd.model import Group, Identity, Snapshot
from syncd.plan import MARKER

from .conftest import PEOPLE, TeamWorld


def test_first_sync_creates_the_teams_with_their_settings_and_members(world: TeamWorld) -> None:
    world.record(PEOPLE)
    report = world.sync()
    assert report.status == "success"
    assert report.applied is not None and report.applied.by_action == {"create_team": 2, "add_member": 4}
    platform = world.team("platform")
    assert platform["metadata"]["syncd"] == dict(MARKER)
    assert (platform["models"], platform["max_budget"], platform["budget_duration"]) == (["gpt-4o"], 500.0, "monthly")
    assert (platform["tpm_limit"], platform["rpm_limit"]) == (10000, 100)
    assert world.members("platform") == {"alice", "bob", "carol"} and world.members("research") == {"bob"}
    assert world.member_budget("platform", "alice") == 25.0 and world.member_budget("research", "bob") is None
    records = world.teams.load_teams()
    assert records["platform"].members == {"alice", "bob", "carol"} and records["platform"].managed
    assert world.store.journal_counts(world.store.recent_runs(1)[0].id) == {"done": 9}  # 3 users + 6 team changes
    audited = {(e["action"], e["key"]) for e in world.store.audit_entries(key="team:research")}
    assert audited == {("create_team", "team:research"), ("add_member", "team:research")}


def test_a_second_sync_reads_the_team_list_once_and_writes_nothing(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.fake.reset_calls()
    report = world.sync()
    assert report.plan.empty and report.plan.unchanged == 2
    assert [(c.method, c.path) for c in world.fake.calls] == [("GET", "/team/list")]


def test_without_teams_configured_litellm_is_not_read(world: TeamWorld) -> None:
    world.configure(teams=[], mappings=[{"group": "llm-users"}])
    world.record(PEOPLE)
    world.sync()
    world.fake.reset_calls()
    report = world.sync()
    assert report.status == "success" and report.plan.empty and world.fake.calls == []


def test_settings_changed_by_hand_are_corrected_field_by_field(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    platform = world.team("platform")
    platform.update(max_budget=9999.0, models=["gpt-4o", "o1"], rpm_limit=100)
    world.fake.reset_calls()
    report = world.sync()
    (change,) = report.plan.changes
    assert change.action == "update_team" and {d.field for d in change.diffs} == {"max_budget", "models"}
    assert change.payload == {"team_id": platform["team_id"], "max_budget": 500.0, "models": ["gpt-4o"]}
    assert world.fake.write_calls() == 1
    assert (platform["max_budget"], platform["models"]) == (500.0, ["gpt-4o"])


def test_a_changed_team_setting_in_the_config_is_applied(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.configure(teams=[{"alias": "platform", "max_budget": 750.0, "budget_duration": "yearly"}])
    world.sync()
    platform = world.team("platform")
    assert (platform["max_budget"], platform["budget_duration"], platform["tpm_limit"]) == (750.0, "365d", 10000)


def test_membership_follows_group_changes(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "alice": {"groups": ["llm-admins"]}, "dave": {"groups": ["llm-power"]}})
    report = world.sync()
    assert report.plan.counts()["add_member"] == 2 and report.plan.counts()["remove_member"] == 1
    assert world.members("platform") == {"bob", "carol", "dave"} and world.members("research") == {"bob", "dave"}
    removal = next(c for c in report.plan.changes if c.action == "remove_member")
    assert (removal.user_id, removal.reason) == ("alice", "no longer in a group that gives this team")
    assert world.teams.load_teams()["platform"].members == {"bob", "carol", "dave"}


def test_people_gone_from_the_source_leave_their_teams(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.configure(policy={"suspended_leave_teams": True})
    world.record({k: v for k, v in PEOPLE.items() if k != "alice"})
    world.sync()
    assert world.members("platform") == {"bob", "carol"}


def test_scim_groups_become_teams(world: TeamWorld) -> None:
    world.configure(
        scim={"enabled": True, "groups_as_teams": True, "tokens": [{"name": "okta", "token": "t0ken"}]},
        mappings=[{"group": "Engineering"}, {"group": "Data Science"}],
        teams=[],
    )
    world.record({"erin": {"groups": ["Engineering"]}, "finn": {"groups": ["Engineering", "Data Science"]}}, "okta")
    report = world.sync()
    assert report.applied is not None and report.applied.by_action == {"create_team": 2, "add_member": 3}
    assert world.members("Engineering") == {"erin", "finn"} and world.members("Data Science") == {"finn"}
    world.record({"erin": {"groups": ["Engineering", "Data Science"]}, "finn": {"groups": ["Engineering"]}}, "okta")
    report = world.sync()
    assert report.plan.counts()["add_member"] == 1 and report.plan.counts()["remove_member"] == 1
    assert world.members("Data Science") == {"erin"}
    reason = next(c.reason for c in report.plan.changes if c.action == "add_member")
    assert "SCIM group 'Data Science'" in reason


def test_a_team_syncd_did_not_create_is_joined_and_left_but_never_changed(world: TeamWorld) -> None:
    world.fake.add_user("zed", user_email="zed@example.com")
    team = world.fake.add_team("hand-made", team_alias="platform", max_budget=1.0, metadata={"owner": "ops"})
    world.fake.add_member(team, world.fake.users["zed"], "user")
    world.configure(policy={"unmapped_users": "ignore"})  # people leave the team's groups, not syncd (not suspended)
    world.record(PEOPLE)
    report = world.sync()
    assert report.plan.counts()["create_team"] == 1  # research only
    assert any("without syncd's marker" in p for p in report.plan.problems)
    assert world.members("platform") == {"zed", "alice", "bob", "carol"}
    world.record({**PEOPLE, "alice": {"groups": []}, "bob": {"groups": ["llm-power"]}, "carol": {"groups": []}})
    world.fake.reset_calls()
    world.sync()
    assert world.members("platform") == {"zed", "bob"}
    assert team["max_budget"] == 1.0 and team["metadata"] == {"owner": "ops"} and "hand-made" in world.fake.teams
    assert world.fake.write_calls("/team/update") == 0 and world.fake.write_calls("/team/delete") == 0
    assert world.member_budget("platform", "bob") is None  # team_member_budget is not applied to a foreign team


def test_a_member_added_by_hand_is_not_removed(world: TeamWorld) -> None:
    world.configure(policy={"unmapped_users": "ignore"})  # alice leaves the team's groups, not syncd (not suspended)
    world.record(PEOPLE)
    world.sync()
    world.fake.add_user("zed")
    world.fake.add_member(world.team("platform"), world.fake.users["zed"], "user")
    world.record({**PEOPLE, "alice": {"groups": []}})
    world.sync()
    assert world.members("platform") == {"zed", "bob", "carol"}


def test_team_admins_need_enterprise_unless_the_fallback_is_allowed(world: TeamWorld) -> None:
    platform = {"alias": "platform", "admin_groups": ["llm-admins"]}
    world.configure(teams=[platform])
    world.record(PEOPLE)
    report = world.sync()
    assert report.status == "failed" and report.applied is not None
    [(what, action, error)] = report.applied.errors
    assert (what, action, error) == ("team platform carol", "add_member", ADMIN_NEEDS_ENTERPRISE)
    assert world.members("platform") == {"alice", "bob"} and "carol" not in world.teams.load_teams()["platform"].members
    world.configure(teams=[{**platform, "admin_fallback_to_user": True}])
    report = world.sync()
    assert report.status == "success" and world.members("platform") == {"alice", "bob", "carol"}
    roles = {m["user_id"]: m["role"] for m in world.team("platform")["members_with_roles"]}
    assert roles["carol"] == "user"
    assert "added as user" in world.store.audit_entries(key="team:platform")[0]["reason"]
    assert world.sync().plan.empty


@pytest.mark.parametrize("leave", [False, True])
def test_a_suspended_user_leaves_teams_only_by_policy(world: TeamWorld, leave: bool) -> None:
    world.configure(policy={"suspended_leave_teams": leave})
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "bob": {**PEOPLE["bob"], "active": False}})
    report = world.sync()
    assert world.store.load_managed()["bob"].state == "suspended"
    assert ("bob" in world.members("platform")) is not leave and ("bob" in world.members("research")) is not leave
    assert report.plan.counts()["remove_member"] == (2 if leave else 0)
    world.record(PEOPLE)
    report = world.sync()
    assert report.plan.counts()["add_member"] == (2 if leave else 0)
    assert "bob" in world.members("platform") and world.member_budget("platform", "bob") == 25.0


def test_a_member_removed_by_hand_is_added_again(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.fake.drop_member(world.team("platform")["team_id"], "alice")
    report = world.sync()
    (change,) = report.plan.changes
    assert (change.action, change.user_id) == ("add_member", "alice") and "added again" in change.reason
    assert "alice" in world.members("platform")


def test_a_deleted_user_is_forgotten_without_a_call(world: TeamWorld) -> None:
    world.configure(policy={"deactivation": "delete", "max_deactivation_ratio": 1.0})
    world.record(PEOPLE)
    world.sync()
    world.record({k: v for k, v in PEOPLE.items() if k != "bob"})
    world.fake.reset_calls()
    report = world.sync()
    assert [(c.action, c.alias, c.user_id) for c in report.plan.changes] == [
        ("forget_member", "platform", "bob"),
        ("forget_member", "research", "bob"),
    ]
    assert report.plan.changes[0].reason == "user deleted from LiteLLM"
    assert world.fake.write_calls("/team/member_delete") == 0 and "bob" not in world.members("platform")
    assert "bob" not in world.teams.load_teams()["platform"].members
    assert world.sync().plan.empty


def test_a_team_deleted_by_hand_is_created_again_with_its_members(world: TeamWorld) -> None:
    world.record(PEOPLE)
    world.sync()
    world.fake.remove_team(world.team("research")["team_id"])
    report = world.sync()
    assert report.plan.counts()["create_team"] == 1 and "created again" in report.plan.changes[0].reason
    assert world.members("research") == {"bob"}


def test_a_team_id_taken_by_another_team_gets_the_next_one(world: TeamWorld) -> None:
    from syncd.plan import team_id_for

    world.fake.add_team(team_id_for("research"), team_alias="something else")
    world.record(PEOPLE)
    world.sync()
    assert world.team("research")["team_id"] == team_id_for("research", 1)
    assert world.team("something else")["members_with_roles"] == [
        {"user_id": "default_user_id", "user_email": None, "role": "admin"}
    ]


def test_a_dry_run_changes_nothing(world: TeamWorld) -> None:
    world.record(PEOPLE)
    report = world.sync(dry_run=True)
    assert report.status == "dry_run" and report.plan.counts()["add_member"] == 4
    assert world.fake.teams == {} and world.teams.load_teams() == {}


class _Crash(BaseException):
    pass


class _CrashingClient:
    """Delegates to the real client and raises after `limit` team writes, as a process dying half-way would stop."""

    def __init__(self, client: Any, limit: int) -> None:
        self.client, self.limit, self.writes = client, limit, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name not in ("new_team", "update_team", "team_member_add", "team_member_delete", "team_member_update"):
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            self.writes += 1
            if self.writes > self.limit:
                raise _Crash("injected")
            return attr(*args, **kwargs)

        return write


@pytest.mark.parametrize("crash_after", [0, 1, 2])
def test_an_interrupted_team_apply_resumes_without_duplicates(world: TeamWorld, crash_after: int) -> None:
    world.record(PEOPLE)
    world.sync()  # users and teams
    changed = {
        "alice": {"groups": ["llm-power"]},
        "carol": {"groups": ["llm-admins"]},
        "dave": {"groups": ["llm-users"]},
    }
    world.record({**PEOPLE, **changed})
    real = world.client
    world.client = _CrashingClient(real, crash_after)
    with pytest.raises(_Crash):
        world.sync()
    world.client = real
    assert world.sync().status == "success"
    assert world.sync().plan.empty
    assert world.members("platform") == {"alice", "bob", "dave"}
    assert world.members("research") == {"alice", "bob"}
    assert len(world.fake.teams) == 2 and world.teams.load_teams()["platform"].members == {"alice", "bob", "dave"}


def test_a_crash_after_creating_a_team_adopts_it_instead_of_creating_another(world: TeamWorld) -> None:
    world.record(PEOPLE)
    real = world.client
    world.client = _CrashingClient(real, 1)  # the first team is created, the second dies
    with pytest.raises(_Crash):
        world.sync()
    world.client = real
    # the team created is recorded as soon as LiteLLM answers, with the members about to be added
    (team,) = world.fake.teams.values()
    assert set(world.teams.load_teams()) == {team["team_alias"]}
    report = world.sync()
    assert report.status == "success" and len(world.fake.teams) == 2
    assert report.plan.counts()["create_team"] == 1 and report.plan.counts()["adopt_team"] == 0
    assert world.members("platform") == {"alice", "bob", "carol"}


def test_a_scim_group_reaches_the_person_another_source_names(world: TeamWorld) -> None:
    world.configure(
        scim={"groups_as_teams": True, "tokens": [{"name": "okta", "token": "t0ken"}]},
        ldap=[],
        teams=[],
        mappings=[{"group": "llm-users"}],
    )
    world.record({"erin": {"groups": ["llm-users"]}})  # LDAP: user_id erin, the winner
    okta = Identity("okta", "00u1", "erin.s@okta", "erin@example.com")
    science = Group("okta", "00g1", "Data Science", None, frozenset({"00u1"}))
    world.store.record_snapshot(Snapshot("okta", [okta], [science]))
    world.sync()
    assert world.members("Data Science") == {"erin"}


def test_an_interruption_sends_no_more_team_writes(world: TeamWorld) -> None:
    people = {f"p{i:02}": {"groups": ["llm-admins"]} for i in range(40)}
    world.record(people)
    world.sync()
    world.record({uid: {"groups": ["llm-users"]} for uid in people})
    real = world.client
    world.client = _CrashingClient(real, 2)
    with pytest.raises(_Crash):
        world.sync()
    world.client = real
    assert len(world.members("platform")) <= 2 + 4  # the writes before the crash + the calls in flight
    assert world.sync().status == "success" and len(world.members("platform")) == 40
