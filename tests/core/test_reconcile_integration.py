"""Reconcile end to end against the fake LiteLLM over real HTTP, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import update

from syncd.litellm import LiteLLMClient
from syncd.model import Group, Identity, Snapshot
from syncd.reconcile import ReconcileOptions, Reconciler
from syncd.settings import Settings, settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.store.tables import managed_users
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

MASTER = "sk-integration-master"
MAPPINGS = [
    {
        "group": "llm-users",
        "role": "internal_user",
        "models": ["gpt-4o"],
        "max_budget": 10,
        "budget_duration": "monthly",
    },
    {
        "group": "llm-power",
        "models": ["claude-3-5-sonnet"],
        "max_budget": 100,
        "budget_duration": "yearly",
        "tpm_limit": 50000,
        "auto_create_keys": True,
    },
    {"group": "llm-admins", "role": "proxy_admin"},
]


class World:
    """A store, a fake LiteLLM and a client wired as `syncd sync` wires them."""

    def __init__(self, database_url: str, litellm_url: str, fake: FakeLiteLLM) -> None:
        self.fake, self.url, self.database_url = fake, litellm_url, database_url
        engine = make_engine(database_url)
        upgrade(engine)
        self.store = SyncStore(engine)
        self.client = LiteLLMClient(litellm_url, MASTER, max_retries=2, backoff_base_s=0.01)
        self.settings = self.configure()

    def configure(self, **extra: Any) -> Settings:
        data: dict[str, Any] = {
            "database": {"url": self.database_url},
            "litellm": {"url": self.url, "master_key": MASTER, "concurrency": 4},
            "mappings": MAPPINGS,
        }
        for key, value in extra.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        self.settings = settings_from_dict(data)
        return self.settings

    def record(self, people: dict[str, dict[str, Any]]) -> None:
        """Record a full snapshot: user_id -> {groups: [...], active: bool, email: ...}."""
        identities = [
            Identity(
                "corp",
                p.get("ext", f"ext-{uid}"),
                uid,
                p.get("email", f"{uid}@example.com"),
                p.get("name"),
                p.get("active", True),
            )
            for uid, p in people.items()
        ]
        names = sorted({g for p in people.values() for g in p.get("groups", ())})
        groups = [
            Group(
                "corp",
                f"g-{n}",
                n,
                None,
                frozenset(p.get("ext", f"ext-{u}") for u, p in people.items() if n in p.get("groups", ())),
            )
            for n in names
        ]
        self.store.record_snapshot(Snapshot("corp", identities, groups))

    def sync(self, **options: Any) -> Any:
        options.setdefault("drift_check", False)
        return Reconciler(self.settings, self.store, self.client).run(ReconcileOptions(**options))


@contextmanager
def running_world(database_url: str, kind: type[World] = World) -> Iterator[Any]:
    """A world of `kind` with its fake LiteLLM served on a local port; closed after."""
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        w = kind(database_url, url, app.state.fake)
        yield w
        w.client.close()
        w.store.engine.dispose()


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    with running_world(database_url) as w:
        yield w


PEOPLE = {
    "alice": {"groups": ["llm-users"], "name": "Alice"},
    "bob": {"groups": ["llm-users", "llm-power"]},
    "carol": {"groups": ["llm-admins", "llm-users"]},
    "dave": {"groups": ["marketing"]},
}


def test_first_sync_creates_every_mapped_user_with_its_fields_and_marker(world: World) -> None:
    world.record(PEOPLE)
    report = world.sync()
    assert report.status == "success" and report.applied.by_action == {"create": 3}
    users = world.fake.users
    assert set(users) == {"alice", "bob", "carol"}
    bob = users["bob"]
    assert (bob["user_role"], sorted(bob["models"]), bob["max_budget"], bob["budget_duration"]) == (
        "internal_user",
        ["claude-3-5-sonnet", "gpt-4o"],
        100.0,
        "365d",
    )
    assert bob["tpm_limit"] == 50000 and bob["metadata"]["syncd"] == {
        "managed": True,
        "source": "corp",
        "external_id": "ext-bob",
    }
    assert users["carol"]["user_role"] == "proxy_admin" and users["alice"]["user_alias"] == "Alice"
    assert len(world.fake.keys_of("bob")) == 1 and world.fake.keys_of("alice") == []
    assert world.store.journal_counts(report.run_id) == {"done": 3}
    assert {e["key"] for e in world.store.audit_entries()} == {"alice", "bob", "carol"}


def test_a_second_sync_makes_no_write_and_no_read(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.fake.reset_calls()
    report = world.sync()
    assert report.plan.empty and report.litellm_reads == 0
    assert world.fake.calls == []


def test_records_without_an_applied_digest_are_compared_in_full_then_given_one(world: World) -> None:
    """Records written before the digest existed: the first run compares them and stores their digest, nothing else;
    a real change among them is still planned."""
    world.record(PEOPLE)
    world.sync()
    with world.store.engine.begin() as conn:
        conn.execute(update(managed_users).values(applied_digest=None))
    world.fake.reset_calls()
    world.record({**PEOPLE, "alice": {"groups": ["llm-users", "llm-power"]}})

    report = world.sync()

    assert report.applied.by_action == {"update": 1} and world.fake.write_calls() == 1
    digests = {user_id: digest for user_id, _, digest in world.store.managed_digests()}
    assert all(digests.values()) and len(digests) == 3
    assert world.sync().plan.unchanged == 3
    assert {user_id: digest for user_id, _, digest in world.store.managed_digests()} == digests


def test_group_changes_update_only_the_changed_fields(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.fake.reset_calls()
    world.record({**PEOPLE, "alice": {"groups": ["llm-users", "llm-power"]}})
    report = world.sync()
    assert report.applied.by_action == {"update": 1}
    alice = world.fake.users["alice"]
    assert alice["max_budget"] == 100.0 and alice["tpm_limit"] == 50000
    assert world.fake.write_calls() == 1


def test_a_limit_no_longer_granted_is_cleared_in_litellm(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "bob": {"groups": ["llm-users"]}})
    world.sync()
    bob = world.fake.users["bob"]
    assert bob["tpm_limit"] is None and bob["max_budget"] == 10.0 and bob["budget_duration"] == "monthly"


def test_suspension_blocks_keys_and_reactivation_unblocks_only_those(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    ours = world.fake.keys_of("bob")[0]["token"]
    admin_blocked = world.fake.add_key("bob", blocked=True)
    world.record({**PEOPLE, "bob": {"groups": ["llm-users", "llm-power"], "active": False}})
    report = world.sync()
    assert report.applied.by_action == {"suspend": 1, "block_keys": 1}
    (block,) = [c for c in report.plan.changes if c.action == "block_keys"]
    assert block.depends_on == ("user:bob",)  # after the suspension: the keys LiteLLM shows unblocked then
    assert world.fake.users["bob"]["metadata"]["scim_active"] is False
    assert all(k["blocked"] for k in world.fake.keys_of("bob"))
    assert world.store.load_managed()["bob"].blocked_keys == (ours,)
    world.record(PEOPLE)
    report = world.sync()
    assert report.applied.by_action == {"unblock_keys": 1, "reactivate": 1}
    keys = {k["token"]: k["blocked"] for k in world.fake.keys_of("bob")}
    assert not keys[ours] and keys[world.fake.find_key(admin_blocked)["token"]] is True
    assert world.fake.users["bob"]["metadata"]["scim_active"] is True


def test_people_gone_from_the_source_are_suspended_and_deleted_by_policy(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({k: v for k, v in PEOPLE.items() if k != "alice"})
    assert world.sync().applied.by_action == {"suspend": 1, "block_keys": 1}
    # the second leaver within the hour is over the guard's window (1 of 3 active users): an approval lets it go
    world.configure(policy={"deactivation": "delete"})
    world.record({k: v for k, v in PEOPLE.items() if k not in ("alice", "carol")})
    held = world.sync()
    assert held.status == "held" and held.holding is not None and held.applied.by_action == {}
    assert held.holding.plan_id is not None and "in the last 1h" in (held.holding.reason or "")
    world.store.decide_held_plan(held.holding.plan_id, "approved", by="test")
    assert world.sync().applied.by_action == {"delete": 1}
    assert "carol" not in world.fake.users and "alice" in world.fake.users


def test_an_unmanaged_litellm_user_is_never_touched(world: World) -> None:
    world.fake.add_user("alice", user_email="alice@example.com", user_role="proxy_admin", max_budget=999.0)
    world.record(PEOPLE)
    report = world.sync()
    assert report.plan.counts()["conflict"] == 1 and report.applied.skipped == 1
    assert world.fake.users["alice"]["user_role"] == "proxy_admin" and world.fake.users["alice"]["max_budget"] == 999
    world.configure(policy={"adopt_existing": True})
    report = world.sync()
    assert report.applied.by_action == {"adopt": 1}
    assert world.fake.users["alice"]["max_budget"] == 10.0 and world.store.load_managed()["alice"].adopted


def test_an_email_held_by_an_unmanaged_user_is_a_conflict_on_create_not_retried(world: World) -> None:
    world.fake.add_user("someone-else", user_email="ALICE@example.com")
    world.record(PEOPLE)
    report = world.sync()
    assert report.status == "success" and report.exit_code == 0
    assert report.applied.by_action == {"create": 2} and report.applied.failed == 0
    ((conflict),) = report.conflicts
    assert (conflict.user_id, conflict.kind, conflict.other) == ("alice", "email_taken", "someone-else")
    assert "alice" not in world.fake.users
    assert set(world.store.load_conflicts()) == {"alice"}
    # the next run writes nothing and exits 0; --fail-on-conflict makes the same run exit 1
    world.fake.reset_calls()
    again = world.sync()
    assert world.fake.write_calls() == 0 and again.exit_code == 0 and len(again.conflicts) == 1
    assert "known conflict" in again.plan.conflicts[0].reason
    assert world.sync(fail_on_conflict=True).exit_code == 1
    assert world.fake.write_calls() == 0
    # a change of this person's inputs retries: with a free email, the person is created and the conflict gone
    world.record({**PEOPLE, "alice": {"groups": ["llm-users"], "email": "alice.new@example.com"}})
    report = world.sync(fail_on_conflict=True)
    assert report.applied.by_action == {"create": 1} and report.exit_code == 0
    assert world.store.load_conflicts() == {}


def test_an_email_change_to_an_email_an_unmanaged_user_holds_is_a_conflict_not_a_duplicate(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.fake.add_user("someone-else", user_email="taken@example.com")
    world.record({**PEOPLE, "alice": {"groups": ["llm-users"], "email": "Taken@example.com"}})
    world.fake.reset_calls()
    report = world.sync()
    assert report.exit_code == 0 and [c.kind for c in report.conflicts] == ["email_taken"]
    assert world.fake.write_calls() == 0 and world.fake.users["alice"]["user_email"] == "alice@example.com"
    again = world.sync()
    assert world.fake.write_calls() == 0 and again.exit_code == 0
    assert world.sync(fail_on_conflict=True).exit_code == 1
    # a drift check retries it (and finds it again)
    drift = world.sync(drift_check=True)
    assert [c.kind for c in drift.conflicts] == ["email_taken"] and world.fake.write_calls() == 0


def test_a_409_met_while_applying_fails_the_create_and_the_next_plan_decides(world: World) -> None:
    """The email was free when planned and taken before the create (another writer): apply never decides what to do
    with a LiteLLM that changed under it; the next plan reads it and plans the conflict."""
    world.record(PEOPLE)
    reconciler = Reconciler(world.settings, world.store, world.client)
    plan, _ = reconciler.plan()
    world.fake.add_user("racer", user_email="alice@example.com")
    run_id = world.store.start_run("test")
    from syncd.apply import Applier

    result = Applier(world.client, world.store, run_id=run_id).apply(plan)
    assert not result.ok and result.by_action == {"create": 2} and result.conflicts == []
    [(user_id, action, error)] = result.errors
    assert (user_id, action) == ("alice", "create") and "409" in error and "the next plan decides" in error
    report = world.sync()
    ((conflict),) = report.conflicts
    assert (conflict.user_id, conflict.kind, conflict.other) == ("alice", "email_taken", "racer")
    assert [c.action for c in report.plan.changes] == ["conflict"] and report.status == "success"


def test_a_change_litellm_refuses_with_a_4xx_is_a_conflict_not_a_failure(world: World) -> None:
    """Values the config cannot hold back (a role refused for users) still reach LiteLLM from an older plan."""
    from syncd.apply import Applier
    from syncd.model import DesiredUser
    from syncd.plan import Action, Change, Plan, desired_fields

    user = DesiredUser("dave", "dave@example.com", "corp", "ext-dave", True, "customer")
    change = Change(
        action=Action.CREATE,
        user_id="dave",
        reason="test",
        source="corp",
        external_id="ext-dave",
        after=desired_fields(user),
        inputs_digest="d1",
    )
    result = Applier(world.client, world.store, run_id=world.store.start_run("test")).apply(Plan(changes=(change,)))
    assert result.ok and result.skipped == 1 and "dave" not in world.fake.users
    ((conflict),) = result.conflicts
    assert conflict.kind == "refused" and "422" in conflict.reason and conflict.inputs_digest == "d1"


def test_a_user_created_before_a_crash_is_taken_back_not_duplicated(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.store.forget_all()  # the store lost what it applied, LiteLLM kept the users
    world.fake.reset_calls()
    report = world.sync()
    assert report.applied.by_action == {"adopt": 3} and len(world.fake.users) == 3
    assert world.fake.write_calls("/user/new") == 0


def test_the_guard_holds_the_deactivations_with_exit_3(world: World) -> None:
    people = {f"u{i}": {"groups": ["llm-users"]} for i in range(30)}
    world.record(people)
    world.sync()
    world.record({k: v for k, v in list(people.items())[:20]})
    world.fake.reset_calls()
    report = world.sync()
    assert report.status == "held" and report.exit_code == 3 and "10 deactivations" in (report.plan.held or "")
    assert world.fake.write_calls() == 0  # nothing else to do: nothing written
    report = world.sync(allow_mass_deactivation=True)
    assert report.applied.by_action == {"suspend": 10, "block_keys": 10}


class _Crash(BaseException):  # like a signal: not a per-user failure
    pass


class _CrashingClient:
    """Delegates to the real client and raises after `limit` writes, as a process dying half-way would stop."""

    def __init__(self, client: LiteLLMClient, limit: int) -> None:
        self.client, self.limit, self.writes = client, limit, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name in ("new_user", "update_user", "block_key", "unblock_key", "delete_users"):

            def write(*args: Any, **kwargs: Any) -> Any:
                self.writes += 1
                if self.writes > self.limit:
                    raise _Crash("injected")
                return attr(*args, **kwargs)

            return write
        return attr


def _end_state(fake: FakeLiteLLM) -> dict[str, Any]:
    return {
        uid: (
            u["user_role"],
            sorted(u["models"]),
            u["max_budget"],
            u["metadata"].get("scim_active"),
            sorted(bool(k["blocked"]) for k in fake.keys_of(uid)),
        )
        for uid, u in fake.users.items()
    }


@pytest.mark.parametrize("crash_after", [0, 2, 4])
def test_an_interrupted_apply_resumes_to_the_same_end_state(world: World, crash_after: int) -> None:
    people = {f"u{i}": {"groups": ["llm-users", "llm-power"] if i % 2 else ["llm-users"]} for i in range(8)}
    world.record(people)
    world.sync()
    changed = {
        uid: ({"groups": ["llm-admins"]} if i < 3 else {**p, "active": i % 3 != 0})
        for i, (uid, p) in enumerate(people.items())
    }
    world.record(changed)
    world.configure(policy={"max_deactivation_ratio": 1.0})
    real = world.client
    world.client = _CrashingClient(real, crash_after)  # type: ignore[assignment]
    with pytest.raises(_Crash):
        world.sync()
    world.client = real
    report = world.sync()
    assert report.status == "success"
    assert world.sync().plan.empty
    expected_users = {uid for uid in people}
    assert set(world.fake.users) == expected_users
    state = _end_state(world.fake)
    for i, uid in enumerate(people):
        role, _, _, active, blocked = state[uid]
        if i < 3:
            assert (role, active) == ("proxy_admin", True)
        else:
            assert active is (i % 3 != 0) and all(b is (i % 3 == 0) for b in blocked)


def test_a_drift_check_corrects_manual_changes_in_few_list_calls(world: World) -> None:
    world.record({f"u{i:03}": {"groups": ["llm-users"]} for i in range(250)})
    world.sync()
    world.fake.users["u007"]["max_budget"] = 5000.0
    world.fake.users["u100"]["user_role"] = "proxy_admin"
    world.fake.reset_calls()
    report = world.sync(drift_check=True)
    assert report.drift_checked and report.applied.by_action == {"update": 2}
    assert world.fake.users["u007"]["max_budget"] == 10.0 and world.fake.users["u100"]["user_role"] == "internal_user"
    lists = [c for c in world.fake.calls if c.path == "/user/list"]
    assert len(lists) == 3 and world.fake.write_calls() == 2


def test_a_dry_run_changes_nothing(world: World) -> None:
    world.record(PEOPLE)
    report = world.sync(dry_run=True)
    assert report.status == "dry_run" and report.plan.counts()["create"] == 3
    assert world.fake.users == {} and world.store.load_managed() == {} and world.store.recent_runs() == []


def test_a_targeted_reconcile_changes_only_the_users_named(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "alice": {"groups": ["llm-admins"]}, "bob": {"groups": ["llm-users"], "active": False}})
    world.fake.reset_calls()
    report = world.sync(user_ids=("alice",))
    assert [(c.user_id, c.action) for c in report.plan.changes] == [("alice", "update")]
    assert world.fake.users["alice"]["user_role"] == "proxy_admin"
    assert world.fake.users["bob"]["metadata"]["scim_active"] is True
    report = world.sync()
    assert [(c.user_id, c.action) for c in report.plan.changes] == [("bob", "suspend"), ("bob", "block_keys")]


def test_a_targeted_reconcile_of_someone_gone_suspends_them(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({k: v for k, v in PEOPLE.items() if k != "carol"})
    report = world.sync(user_ids=("carol", "alice"))
    assert [(c.user_id, c.action) for c in report.plan.changes] == [("carol", "suspend"), ("carol", "block_keys")]
    identities, groups = world.store.load_people(["alice"])
    assert [i.user_id for i in identities] == ["alice"] and {g.name for g in groups} == {"llm-users"}
    assert all(g.members == frozenset({"ext-alice"}) for g in groups)


def test_should_stop_finishes_the_changes_in_flight_and_journals_the_rest_pending(world: World) -> None:
    from syncd.apply import ApplyStopped
    from syncd.store.tables import changes

    world.record({f"u{i:02}": {"groups": ["llm-users"]} for i in range(40)})
    done: list[str] = []
    reconciler = Reconciler(
        world.settings,
        world.store,
        world.client,
        should_stop=lambda: len(done) >= 5,
        on_outcome=lambda change, status: done.append(change.user_id),
    )
    with pytest.raises(ApplyStopped):
        reconciler.run(ReconcileOptions(drift_check=False))
    created = set(world.fake.users)
    assert 5 <= len(created) < 40 and not reconciler.applying
    with world.store.engine.connect() as conn:
        statuses = {row.key: row.status for row in conn.execute(changes.select())}
    assert {k for k, v in statuses.items() if v == "done"} == created
    assert {v for k, v in statuses.items() if k not in created} == {"pending"}
    assert world.store.recent_runs(1)[0].status == "stopped"
    report = world.sync()
    assert report.status == "success" and len(world.fake.users) == 40


# -- identity over time (issue 13) ------------------------------------------------------------------------------
def test_a_rename_keeps_the_bound_user_id_nothing_suspended_no_409_one_update(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    renamed = {k: v for k, v in PEOPLE.items() if k != "alice"}
    renamed["alice2"] = {"groups": ["llm-users"], "ext": "ext-alice", "email": "alice2@example.com", "name": "Al"}
    world.record(renamed)
    world.fake.reset_calls()
    report = world.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"update": 1}
    (change,) = report.plan.changes
    assert change.user_id == "alice" and change.note == "user_id kept as alice; corp now says alice2"
    assert world.fake.write_calls() == 1 and world.fake.write_calls("/user/new") == 0
    alice = world.fake.users["alice"]
    assert alice["user_email"] == "alice2@example.com" and alice["user_alias"] == "Al"
    assert "alice2" not in world.fake.users and alice["metadata"].get("scim_active") is not False
    assert world.store.load_managed()["alice"].state == "active"
    world.fake.reset_calls()
    assert world.sync().applied.by_action == {} and world.fake.write_calls() == 0


def test_a_leavers_name_reused_by_a_new_person_is_a_conflict_and_the_keys_stay_blocked(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    key = world.fake.keys_of("bob")[0]["token"]
    world.record({k: v for k, v in PEOPLE.items() if k != "bob"})
    assert world.sync().applied.by_action == {"suspend": 1, "block_keys": 1}
    newcomer = {"groups": ["llm-users"], "ext": "ext-bob-2", "email": "robert@example.com"}
    world.record({**PEOPLE, "bob": newcomer})
    world.fake.reset_calls()
    report = world.sync()
    assert report.exit_code == 0 and world.fake.write_calls() == 0
    (conflict,) = report.conflicts
    assert conflict.kind == "bound_elsewhere" and conflict.other == "corp:ext-bob"
    assert "ext-bob" in conflict.reason and "ext-bob-2" in conflict.reason
    bob = world.fake.users["bob"]
    assert bob["user_email"] == "bob@example.com" and bob["metadata"]["scim_active"] is False
    assert world.fake.keys[key]["blocked"] is True
    assert world.sync(fail_on_conflict=True).exit_code == 1
    # released on purpose: the newcomer takes the user over, the leaver's key stays blocked
    world.store.release_binding("bob")
    report = world.sync()
    assert report.applied.by_action == {"adopt": 1} and report.exit_code == 0
    bob = world.fake.users["bob"]
    assert bob["user_email"] == "robert@example.com" and bob["metadata"]["syncd"]["external_id"] == "ext-bob-2"
    assert world.fake.keys[key]["blocked"] is True


def test_a_manual_unsuspension_is_undone_by_a_drift_check(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    key = world.fake.keys_of("bob")[0]["token"]
    world.record({**PEOPLE, "bob": {**PEOPLE["bob"], "active": False}})
    world.sync()
    # an admin reopens bob by hand in LiteLLM
    reopened = {**world.fake.users["bob"]["metadata"], "scim_active": True}
    world.client.update_user({"user_id": "bob", "metadata": reopened})
    world.client.unblock_key(key)
    assert world.sync().plan.empty
    first_suspended = world.store.load_managed()["bob"].suspended_at
    report = world.sync(drift_check=True)
    assert [(c.action, c.user_id) for c in report.plan.changes] == [("suspend", "bob"), ("block_keys", "bob")]
    assert report.applied.by_action == {"suspend": 1, "block_keys": 1}
    assert world.fake.users["bob"]["metadata"]["scim_active"] is False and world.fake.keys[key]["blocked"] is True
    assert world.store.load_managed()["bob"].suspended_at == first_suspended  # delete_after counts from the first
    assert world.sync(drift_check=True).plan.empty


def test_a_managed_person_leaving_every_mapped_group_is_suspended_by_default(world: World) -> None:
    world.record(PEOPLE)
    world.sync()
    world.record({**PEOPLE, "alice": {"groups": ["marketing"]}})
    report = world.sync()
    assert (
        report.applied.by_action == {"suspend": 1, "block_keys": 1}
        and "policy.unmapped_users" in report.plan.changes[0].reason
    )
    assert world.fake.users["alice"]["metadata"]["scim_active"] is False
    assert "dave" not in world.fake.users  # never provisioned: still ignored
    world.record(PEOPLE)
    world.sync()
    world.configure(policy={"unmapped_users": "ignore"})
    world.record({**PEOPLE, "alice": {"groups": ["marketing"]}})
    assert world.sync().plan.empty


def test_a_user_id_with_a_comma_is_read_back_and_updated(world: World) -> None:
    people = {
        "doe, john": {"groups": ["llm-users"], "email": "john.doe@example.com"},
        "user1": {"groups": ["llm-users"]},
    }
    world.fake.add_user("USER10", user_email="other@example.com")  # a loose match of "user1" on the real proxy
    world.record(people)
    assert world.sync().applied.by_action == {"create": 2}
    world.record({k: {**v, "groups": ["llm-users", "llm-power"]} for k, v in people.items()})
    report = world.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"update": 2}
    assert world.fake.write_calls("/user/new") == 2
    assert world.fake.users["doe, john"]["max_budget"] == 100.0 and world.fake.users["USER10"]["max_budget"] is None


def test_known_conflicts_are_on_the_status_page_in_explain_and_in_the_gauge(world: World) -> None:
    from syncd.explain import explain, render_explanation
    from syncd.metrics import Metrics
    from syncd.status import collect_status, render_page

    world.fake.add_user("someone-else", user_email="alice@example.com")
    world.record(PEOPLE)
    metrics = Metrics()
    Reconciler(world.settings, world.store, world.client, metrics=metrics).run(ReconcileOptions(drift_check=False))
    assert metrics.registry.get_sample_value("syncd_conflicts") == 1.0
    summary = collect_status(world.store, detailed=False)
    assert summary["conflicts"] == 1 and "conflict_rows" not in summary  # no user ids without the admin token
    detailed = collect_status(world.store, detailed=True)
    (row,) = detailed["conflict_rows"]
    assert (row["user_id"], row["kind"], row["other"]) == ("alice", "email_taken", "someone-else")
    page = render_page(detailed)
    assert '<table id="conflicts">' in page and "someone-else" in page
    assert "Known conflicts" in render_page(summary) and "someone-else" not in render_page(summary)
    data = explain(world.settings, world.store, world.client, "alice")
    assert [c["kind"] for c in data["known_conflicts"]] == ["email_taken"]
    assert "known conflict (email_taken)" in render_explanation(data)


def test_explain_shows_the_binding_of_a_renamed_person(world: World) -> None:
    from syncd.explain import explain, render_explanation

    world.record(PEOPLE)
    world.sync()
    world.record({k: v for k, v in PEOPLE.items() if k != "alice"} | {"al": PEOPLE["alice"] | {"ext": "ext-alice"}})
    data = explain(world.settings, world.store, world.client, "al")
    assert data["user_id"] == "alice"
    assert data["binding"] == {"user_id": "alice", "source": "corp", "external_id": "ext-alice", "source_says": "al"}
    text = render_explanation(data)
    assert "bound: user_id alice <- corp ext-alice (made at creation); the source now says al" in text
    assert data["next_change"][0]["note"] == "user_id kept as alice; corp now says al"
