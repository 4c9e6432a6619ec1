"""A person's identity over time, from a real slapd through the store to the fake LiteLLM (issue 13).

Each test pulls the test's subtree, records it, and reconciles against the fake LiteLLM over HTTP, on SQLite and on
the real PostgreSQL: a modrdn rename, a leaver's uid reused by someone else, a person without mail, and an entry
the store cannot hold among many while a leaver is synced in the same run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _tree import Tree

from syncd.litellm import LiteLLMClient
from syncd.reconcile import ReconcileOptions, Reconciler, RunReport
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

pytestmark = pytest.mark.slapd

MASTER = "sk-lifecycle-master"


class Directory:
    """The test's subtree, a store and the fake LiteLLM, pulled and reconciled as `syncd sync` does."""

    def __init__(self, tree: Tree, database_url: str, litellm_url: str, fake: FakeLiteLLM) -> None:
        self.tree, self.fake = tree, fake
        self.group = tree.add_group("llm", [])
        engine = make_engine(database_url)
        upgrade(engine)
        self.store = SyncStore(engine)
        self.client = LiteLLMClient(litellm_url, MASTER, max_retries=1, backoff_base_s=0.01)
        self.settings = settings_from_dict(
            {
                "database": {"url": database_url},
                "litellm": {"url": litellm_url, "master_key": MASTER},
                "mappings": [{"group": "llm", "role": "internal_user", "max_budget": 5, "auto_create_keys": True}],
            }
        )

    def person(self, uid: str, **attrs: Any) -> str:
        dn = self.tree.add_user(uid, **attrs)
        self.tree.add_member(self.group, dn)
        return dn

    def sync(self, **options: Any) -> RunReport:
        snapshot = self.tree.source().pull()
        assert snapshot.complete, snapshot.problems
        self.store.record_snapshot(snapshot)
        self.last_counters = snapshot.counters
        return Reconciler(self.settings, self.store, self.client).run(ReconcileOptions(drift_check=False, **options))


@pytest.fixture
def directory(tree: Tree, database_url: str) -> Iterator[Directory]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        d = Directory(tree, database_url, url, app.state.fake)
        yield d
        d.client.close()
        d.store.engine.dispose()


def test_a_modrdn_rename_is_one_update_nothing_suspended_no_409(directory: Directory) -> None:
    jdoe = directory.person("jdoe", mail="jdoe@example.org")
    directory.person("other")
    assert directory.sync().applied.by_action == {"create": 2}
    renamed = directory.tree.rename(jdoe, "uid=jsmith")
    directory.tree.replace(renamed, mail="jsmith@example.org")
    directory.fake.reset_calls()
    report = directory.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"update": 1}, report.to_dict()
    (change,) = report.plan.changes
    assert change.user_id == "jdoe" and change.note == "user_id kept as jdoe; corp now says jsmith"
    assert directory.fake.write_calls() == 1 and directory.fake.write_calls("/user/new") == 0
    user = directory.fake.users["jdoe"]
    assert user["user_email"] == "jsmith@example.org" and user["metadata"]["scim_active"] is True
    assert "jsmith" not in directory.fake.users
    assert all(not key["blocked"] for key in directory.fake.keys_of("jdoe"))


def test_a_leavers_uid_reused_by_a_new_person_is_a_conflict_and_their_keys_stay_blocked(
    directory: Directory,
) -> None:
    bob = directory.person("bob")
    directory.person("other")
    directory.sync()
    (key,) = directory.fake.keys_of("bob")
    directory.tree.delete(bob)
    assert directory.sync().applied.by_action == {"suspend": 1, "block_keys": 1}
    directory.person("bob", mail="robert@example.org")  # another entry, another entryUUID
    directory.fake.reset_calls()
    report = directory.sync()
    assert report.exit_code == 0 and directory.fake.write_calls() == 0
    (conflict,) = report.conflicts
    assert conflict.kind == "bound_elsewhere" and conflict.user_id == "bob"
    assert directory.fake.keys[key["token"]]["blocked"] is True
    assert directory.fake.users["bob"]["user_email"] == "bob@example.org"
    assert directory.sync(fail_on_conflict=True).exit_code == 1


def test_a_person_without_mail_is_created_without_one(directory: Directory) -> None:
    directory.person("svc-build", mail=None)
    report = directory.sync()
    assert report.applied.by_action == {"create": 1} and directory.last_counters["no_email"] == 1
    assert directory.fake.users["svc-build"]["user_email"] is None


def test_one_oversized_entry_among_many_is_skipped_and_a_leaver_is_still_suspended(
    directory: Directory, caplog: pytest.LogCaptureFixture
) -> None:
    people = [directory.person(f"p{i:02d}") for i in range(30)]
    directory.sync()
    directory.tree.delete(people[0])  # a leaver, synced in the same run as the odd entries
    huge = directory.person("huge", cn="x" * 600)
    directory.person("longmail", mail="m" * 330 + "@example.org")
    report = directory.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"suspend": 1, "block_keys": 1}, report.to_dict()
    assert directory.fake.users["p00"]["metadata"]["scim_active"] is False
    assert directory.last_counters["skipped_unstorable"] == 2
    assert "huge" not in directory.fake.users and len(directory.fake.users) == 30
    assert any(huge in r.getMessage() and "cn has 600 characters" in r.getMessage() for r in caplog.records)
    assert any("uid=longmail" in r.getMessage() and "mail has 342 characters" in r.getMessage() for r in caplog.records)
