"""Issue 13's cases end to end against the real LiteLLM proxy: the store on SQLite, the people recorded directly.

Every test names its people with a prefix of its own, so the tests share one proxy without meeting each other's
users; writes are counted with the client's call hook (`on_call`), the way the fake's call log counts them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.apply import Applier
from syncd.litellm import LiteLLMClient
from syncd.model import DesiredUser, Group, Identity, Snapshot
from syncd.plan import Action, Change, Plan, desired_fields
from syncd.reconcile import ReconcileOptions, Reconciler, RunReport
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore

pytestmark = pytest.mark.real_litellm

_WRITES = ("/user/new", "/user/update", "/user/delete", "/key/block", "/key/unblock")


class RealWorld:
    """A store, the real proxy and a client wired as `syncd sync` wires them, people named `<prefix>-<name>`."""

    def __init__(self, folder: Path, url: str, key: str) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.url, self.key = url, key
        self.database_url = f"sqlite:///{folder}/syncd.db"
        engine = make_engine(self.database_url)
        upgrade(engine)
        self.store = SyncStore(engine)
        self.calls: list[tuple[str, int | None]] = []
        self.client = LiteLLMClient(url, key, max_retries=1, on_call=lambda e, s, _: self.calls.append((e, s)))
        self.configure()

    def configure(self, max_budget: float = 5, **policy: Any) -> None:
        mapping = {"group": "llm", "role": "internal_user", "max_budget": max_budget, "auto_create_keys": True}
        self.settings = settings_from_dict(
            {
                "database": {"url": self.database_url},
                "litellm": {"url": self.url, "master_key": self.key, "concurrency": 4},
                "mappings": [mapping],
                "policy": {"max_deactivation_ratio": 1.0, **policy},
            }
        )

    def uid(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def email(self, name: str) -> str:
        return f"{self.prefix}.{name}@example.com"

    def record(self, people: dict[str, dict[str, Any]]) -> None:
        """name -> {ext, email (None: none), groups: [llm] by default, active}."""
        identities = [
            Identity(
                "corp",
                p.get("ext", f"ext-{name}"),
                p.get("uid", self.uid(name)),
                self.email(name) if "email" not in p else (p["email"] or ""),
                active=p.get("active", True),
            )
            for name, p in people.items()
        ]
        members = frozenset(p.get("ext", f"ext-{n}") for n, p in people.items() if "llm" in p.get("groups", ["llm"]))
        self.store.record_snapshot(Snapshot("corp", identities, [Group("corp", "g-llm", "llm", None, members)]))

    def sync(self, **options: Any) -> RunReport:
        options.setdefault("drift_check", False)
        self.calls.clear()
        return Reconciler(self.settings, self.store, self.client).run(ReconcileOptions(**options))

    def writes(self) -> int:
        return sum(1 for endpoint, _ in self.calls if endpoint in _WRITES)

    def user(self, user_id: str) -> dict[str, Any]:
        (found,) = [u for u in self.client.get_users([user_id]) if u["user_id"] == user_id]
        return found

    def keys(self, user_id: str) -> list[dict[str, Any]]:
        return self.client.list_keys(user_id)


@pytest.fixture
def world(tmp_path: Path, real_url: str, real_key: str) -> Iterator[RealWorld]:
    w = RealWorld(tmp_path, real_url, real_key)
    yield w
    w.client.close()
    w.store.engine.dispose()


def test_a_rename_keeps_the_user_id_nothing_suspended_no_409_one_update(world: RealWorld) -> None:
    world.record({"jdoe": {}, "other": {}})
    assert world.sync().applied.by_action == {"create": 2}
    world.record({"jsmith": {"ext": "ext-jdoe"}, "other": {}})
    report = world.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"update": 1}, report.to_dict()
    assert world.writes() == 1 and not any(status == 409 for _, status in world.calls)
    user = world.user(world.uid("jdoe"))
    assert user["user_email"] == world.email("jsmith") and user["metadata"]["scim_active"] is True
    assert all(not key.get("blocked") for key in world.keys(world.uid("jdoe")))


def test_a_leavers_name_reused_by_a_new_person_is_a_conflict_and_the_keys_stay_blocked(world: RealWorld) -> None:
    world.record({"bob": {}, "other": {}})
    world.sync()
    world.record({"other": {}})
    assert world.sync().applied.by_action == {"suspend": 1, "block_keys": 1}  # the key LiteLLM created with bob
    world.record({"bob": {"ext": "ext-bob-2", "email": world.email("robert")}, "other": {}})
    report = world.sync()
    assert report.exit_code == 0 and world.writes() == 0
    assert [c.kind for c in report.conflicts] == ["bound_elsewhere"]
    bob = world.user(world.uid("bob"))
    assert bob["user_email"] == world.email("bob") and bob["metadata"]["scim_active"] is False
    keys = world.keys(world.uid("bob"))
    assert keys and all(key.get("blocked") is True for key in keys)
    assert world.sync(fail_on_conflict=True).exit_code == 1


def test_an_email_held_by_an_unmanaged_user_is_a_conflict_on_create_and_on_update(world: RealWorld) -> None:
    world.client.new_user({"user_id": world.uid("someone"), "user_email": world.email("alice").upper()})
    world.client.new_user({"user_id": world.uid("other"), "user_email": world.email("taken")})
    world.record({"alice": {}, "carol": {}})
    report = world.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"create": 1}
    assert [(c.user_id, c.kind, c.other) for c in report.conflicts] == [
        (world.uid("alice"), "email_taken", world.uid("someone"))
    ]
    again = world.sync()
    assert world.writes() == 0 and again.exit_code == 0
    assert world.sync(fail_on_conflict=True).exit_code == 1
    world.record({"alice": {}, "carol": {"email": world.email("taken")}})  # LiteLLM's /user/update would allow it
    report = world.sync()
    assert world.writes() == 0 and report.exit_code == 0
    assert sorted(c.kind for c in report.conflicts) == ["email_taken", "email_taken"]
    assert world.user(world.uid("carol"))["user_email"] == world.email("carol")


def test_a_change_the_real_proxy_refuses_is_a_conflict_not_a_failure(world: RealWorld) -> None:
    user = DesiredUser(world.uid("dave"), world.email("dave"), "corp", "ext-dave", True, "customer")
    change = Change(
        action=Action.CREATE,
        user_id=user.user_id,
        reason="test",
        source="corp",
        external_id="ext-dave",
        after=desired_fields(user),
        inputs_digest="d",
    )
    result = Applier(world.client, world.store, run_id=world.store.start_run("test")).apply(Plan(changes=(change,)))
    assert result.ok and result.skipped == 1
    ((conflict),) = result.conflicts
    assert conflict.kind == "refused" and "422" in conflict.reason


def test_a_user_id_with_a_comma_is_read_back_and_updated(world: RealWorld) -> None:
    comma, short = f"{world.prefix}-doe, john", world.uid("u1")
    world.client.new_user({"user_id": f"{short}0", "user_email": world.email("u10")})  # "u1" matches it loosely
    world.record({"doe": {"uid": comma}, "u1": {"uid": short}})
    assert world.sync().applied.by_action == {"create": 2}
    world.configure(max_budget=7)
    report = world.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"update": 2}, report.to_dict()
    assert not any(status == 409 for _, status in world.calls)
    assert world.user(comma)["max_budget"] == 7.0 and world.user(f"{short}0")["max_budget"] is None


def test_a_person_without_mail_is_created_without_one(world: RealWorld) -> None:
    world.record({"svc": {"email": None}})
    assert world.sync().applied.by_action == {"create": 1}
    assert world.user(world.uid("svc"))["user_email"] is None


def test_a_manual_unsuspension_is_undone_by_a_drift_check(world: RealWorld) -> None:
    world.record({"eve": {}})
    world.sync()
    world.record({"eve": {"active": False}})
    world.sync()
    uid = world.uid("eve")
    (key,) = world.keys(uid)
    world.client.update_user({"user_id": uid, "metadata": {**world.user(uid)["metadata"], "scim_active": True}})
    world.client.unblock_key(key["token"])
    assert world.sync().plan.empty
    report = world.sync(drift_check=True)
    assert [(c.action, c.user_id) for c in report.plan.changes] == [("suspend", uid), ("block_keys", uid)]
    assert world.user(uid)["metadata"]["scim_active"] is False
    assert all(k.get("blocked") is True for k in world.keys(uid))


def test_a_managed_person_leaving_every_mapped_group_is_suspended_by_default(world: RealWorld) -> None:
    world.record({"fay": {}, "gil": {}})
    world.sync()
    world.record({"fay": {"groups": []}, "gil": {}})
    report = world.sync()
    assert report.applied.by_action == {"suspend": 1, "block_keys": 1}
    assert world.user(world.uid("fay"))["metadata"]["scim_active"] is False
