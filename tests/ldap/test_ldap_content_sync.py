"""RFC 4533 content sync against the real slapd (syncprov): each change-based pull, recorded, leaves the store as a
fresh full pull would; deletions are reported; a refused cookie or a failure falls back to a full pull."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _stores import new_store, store_at
from _stores import present as present_in
from _tree import Tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.model import Snapshot
from syncd.sources._content import cookies_from_text
from syncd.sources.ldap import LdapSource
from syncd.store.repository import SyncStore

pytestmark = pytest.mark.slapd


def present(store: SyncStore, source: str = "corp") -> dict[str, Any]:
    """What the store holds as present for this suite's source."""
    return present_in(store, source)


def pull_recorded(source: LdapSource, store: SyncStore) -> Snapshot:
    """One pull, recorded; it must be complete."""
    snapshot = source.pull()
    assert snapshot.complete, snapshot.problems
    store.record_snapshot(snapshot)
    return snapshot


def full_state(tree: Tree, tmp_path: Path) -> dict[str, Any]:
    """The store's state after one plain full pull (content sync off) into a fresh store."""
    store = new_store(tmp_path / "full.db")
    snapshot = LdapSource(tree.settings(content_sync="off")).pull()
    assert snapshot.complete and not snapshot.change_based, snapshot.problems
    store.record_snapshot(snapshot)
    return present(store)


def test_content_sync_pulls_reach_the_state_of_a_full_pull(tree: Tree, tmp_path: Path, database_url: str) -> None:
    users = {uid: tree.add_user(uid) for uid in ("alice", "bob", "carol", "dave", "erin")}
    leaf = tree.add_group("leaf", [users["alice"]])
    tree.add_group("middle", [users["bob"], leaf])
    flat = tree.add_group("flat", [users["carol"], users["dave"]])
    source = tree.source(content_sync="auto")
    store = store_at(database_url)  # SQLite and PostgreSQL
    first = pull_recorded(source, store)
    assert not first.change_based and first.counters["content_sync_started"] == 1 and source.content_synced
    assert set(cookies_from_text(first.sync_cookie)) == {"users", "groups", "disabled"}

    nothing = pull_recorded(source, store)
    assert nothing.change_based and nothing.incremental
    assert (nothing.identities, nothing.groups, nothing.removed_identities) == ([], [], set())

    tree.add_member(leaf, users["erin"])  # leaf and, through nesting, middle
    tree.replace(users["bob"], mail="robert@example.org")
    users["carol"] = tree.rename(users["carol"], "uid=caroline")  # refint rewrites flat's member value
    tree.replace(users["dave"], pwdAccountLockedTime="000001010000Z")  # disabled
    changed = pull_recorded(source, store)
    assert {g.name for g in changed.groups} >= {"leaf", "middle", "flat"}
    assert present(store) == full_state(tree, tmp_path)

    erin_id = tree.entry_uuid(users["erin"])
    flat_id = tree.entry_uuid(flat)
    tree.delete(users["erin"])  # refint takes erin out of leaf
    tree.delete(flat)
    tree.replace(users["alice"], mail=[])  # no mail: no longer a person syncd records
    tree.add_user("frank")
    gone = pull_recorded(source, store)
    assert gone.change_based and erin_id in gone.removed_identities and gone.removed_groups == {flat_id}
    assert present(store) == full_state(tree, tmp_path)
    state = store.source_state("corp")
    assert state.sync_cookie == gone.sync_cookie and state.last_full_at is not None


def test_groups_that_lost_or_gained_a_member_are_updated_by_difference(tree: Tree, tmp_path: Path) -> None:
    users = [tree.add_user(f"crowd{i}") for i in range(10)]
    inner = tree.add_group("inner", users[:4])
    outer = tree.add_group("outer", [*users[4:9], inner])
    source = tree.source(content_sync="auto")
    store = new_store(tmp_path / "crowd.db")
    pull_recorded(source, store)
    tree.delete(users[0])  # refint takes it out of inner; outer loses it through nesting
    tree.remove_member(outer, users[5])
    tree.add_member(inner, users[9])  # outer gains it through inner
    changed = pull_recorded(source, store)
    assert changed.counters.get("groups_by_difference") == 2  # neither group expanded whole again
    assert present(store) == full_state(tree, tmp_path)


def test_a_cookie_older_than_the_session_log_gets_a_present_phase(tree: Tree, tmp_path: Path) -> None:
    users = [tree.add_user(uid) for uid in ("gina", "hank")]
    tree.add_group("team", users)
    source = tree.source(content_sync="auto")
    store = new_store(tmp_path / "content.db")
    pull_recorded(source, store)
    assert source._content is not None
    for session in source._content.sessions.values():
        session.cookie = b"rid=000,csn=19700101000000.000000Z#000000#000#000000"  # far older than the session log
    hank = tree.entry_uuid(users[1])
    tree.delete(users[1])
    again = pull_recorded(source, store)  # every entry sent again, the rest named present: hank is not
    assert again.change_based and again.removed_identities == {hank}
    assert present(store) == full_state(tree, tmp_path)


def test_a_refresh_that_fails_partway_records_nothing_and_starts_afresh(
    tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tree.add_user("ivan")
    tree.add_group("solo", [user, tree.add_user("ivy")])
    source = tree.source(content_sync="auto")
    store = new_store(tmp_path / "content.db")
    pull_recorded(source, store)
    before = present(store)
    tree.delete(user)

    def dropped(*_: object) -> None:
        raise OSError("connection reset")  # after the users and groups were applied to the index

    monkeypatch.setattr(source, "_reread_referencing", dropped)
    failed = source.pull()
    assert not failed.complete and failed.identities == [] and not failed.removed_identities
    assert not source.content_synced and "connection reset" in failed.problems[0]
    monkeypatch.undo()
    assert present(store) == before  # nothing recorded
    restarted = pull_recorded(source, store)
    assert not restarted.change_based
    assert present(store) == full_state(tree, tmp_path)


def test_content_sync_off_reads_everything_each_time(tree: Tree) -> None:
    tree.add_user("judy")
    source = tree.source(content_sync="off")
    assert not source.pull().change_based and not source.pull().change_based and not source.content_synced


def test_true_full_reads_everything_and_restarts_the_content_sync(tree: Tree, tmp_path: Path) -> None:
    tree.add_group("crew", [tree.add_user("kim")])
    source = tree.source(content_sync="auto")
    store = new_store(tmp_path / "content.db")
    pull_recorded(source, store)
    verified = source.pull(true_full=True)
    assert verified.complete and not verified.change_based and verified.identities
    assert source.pull().change_based


# -- equal results, property-based ----------------------------------------------------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["add_user", "modify", "rename", "add_member", "remove_member", "delete_user", "lock", "group", "ungroup"]
        ),
        st.integers(0, 1000),
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=8,
)


class _World:
    """The users and groups of one property run, changed at random through the tree."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.users: list[str] = [tree.add_user(f"p{i}") for i in range(12)]
        self.groups: list[str] = [
            tree.add_group("g0", self.users[:2]),
            tree.add_group("g1", self.users[1:3]),
        ]
        self.groups.append(tree.add_group("g2", [self.users[3], self.groups[0]]))  # nested
        # larger than a batch's member hint: its changes are applied by difference, not by expanding it whole
        self.groups.append(tree.add_group("crowd", [*self.users[4:], self.groups[2]]))
        self.serial = 100

    def apply(self, op: str, a: int, b: int) -> None:
        tree, self.serial = self.tree, self.serial + 1
        if op == "add_user" or not self.users:
            self.users.append(tree.add_user(f"p{self.serial}"))
            return
        user = self.users[a % len(self.users)]
        if op == "group" or not self.groups:
            self.groups.append(tree.add_group(f"g{self.serial}", [user, *self.groups[-1:]]))
            return
        group = self.groups[b % len(self.groups)]
        if op == "modify":
            tree.replace(user, mail=f"m{self.serial}@example.org", cn=f"Name {self.serial}")
        elif op == "rename":
            self.users[a % len(self.users)] = tree.rename(user, f"uid=p{self.serial}")
        elif op == "add_member":
            members = self._members(group)
            if user.lower() not in members:
                tree.add_member(group, user)
        elif op == "remove_member":
            members = self._members(group)
            if user.lower() in members and len(members) > 1:
                tree.remove_member(group, user)
        elif op == "delete_user" and len(self.users) > 1:  # no users at all is refused as suddenly empty
            tree.delete(user)
            self.users.remove(user)
        elif op == "ungroup" and len(self.groups) > 1:  # no groups at all is refused as suddenly empty
            tree.delete(group)  # refint takes it out of the groups it was nested in
            self.groups.remove(group)
        elif op == "lock":
            tree.replace(user, pwdAccountLockedTime=[] if a % 2 else "000001010000Z")

    def _members(self, group: str) -> set[str]:
        conn = self.tree.conn
        assert conn.search(group, "(objectClass=*)", "BASE", attributes=["member"]), conn.result
        return {str(v).lower() for v in conn.entries[0].member.values}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_OPS, min_size=1, max_size=3))
def test_content_sync_equals_a_full_pull_after_random_changes(
    tree_factory: Any, tmp_path: Path, batches: list[list[tuple[str, int, int]]]
) -> None:
    tree = tree_factory()
    world = _World(tree)
    source = tree.source(content_sync="auto")
    store = new_store(tmp_path / "property.db")
    pull_recorded(source, store)
    for batch in batches:
        for op, a, b in batch:
            world.apply(op, a, b)
        snapshot = pull_recorded(source, store)
        assert snapshot.change_based
        assert present(store) == full_state(tree, tmp_path)  # members digests too: updated by difference, or whole


def test_the_true_full_pull_logs_and_counts_drift(tree: Tree, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from syncd.metrics import Metrics
    from syncd.pull import pull_sources

    user = tree.add_user("lena")
    tree.add_group("desk", [user, tree.add_user("mona")])
    settings = SimpleNamespace(ldap=[tree.settings(content_sync="auto")])
    store = new_store(tmp_path / "drift.db")
    metrics, cache = Metrics(CollectorRegistry()), {}
    pull_sources(settings, store, record=True, sources=cache, metrics=metrics)
    exact = pull_sources(settings, store, record=True, sources=cache, metrics=metrics, true_full=True)
    assert exact[1] == [] and metrics.source_drift.labels("corp")._value.get() == 0
    lena = tree.entry_uuid(user)
    wrong = Snapshot("corp", incremental=True, change_based=True, removed_identities={lena})
    store.record_snapshot(wrong)  # as if a content sync had lost lena
    caplog.set_level("WARNING")
    _, failed = pull_sources(settings, store, record=True, sources=cache, metrics=metrics, true_full=True)
    assert failed == [] and metrics.source_drift.labels("corp")._value.get() == 1  # lena present again
    assert any("drift" in r.getMessage() for r in caplog.records)
    assert present(store) == full_state(tree, tmp_path)


def test_a_refused_cookie_gives_a_full_pull(tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from syncd.sources import ldap as ldap_module

    users = [tree.add_user(uid) for uid in ("pia", "quin")]
    tree.add_group("pair", users)
    source = tree.source(content_sync="auto")
    store = new_store(tmp_path / "refused.db")
    pull_recorded(source, store)
    tree.delete(users[0])
    original = source._sync_search

    def refusing(conn: Any, base: str, flt: str, attrs: list[str], cookie: bytes | None) -> Any:
        if cookie is not None and "!(objectClass=*)" not in flt:
            raise ldap_module._RefreshRequired("e-syncRefreshRequired (simulated)")
        return original(conn, base, flt, attrs, cookie)

    monkeypatch.setattr(source, "_sync_search", refusing)
    again = pull_recorded(source, store)
    assert not again.change_based and again.counters["content_sync_fallback"] == 1 and source.content_synced
    assert present(store) == full_state(tree, tmp_path)


def test_a_refresh_over_the_size_limit_gives_a_full_pull(slapd: Any, tmp_path: Path) -> None:
    from _slapd import SUFFIX, SYNC_DN, SYNC_PASSWORD
    from _tree import BIG_USERS

    from syncd.settings.ldap import LdapSourceSettings

    settings = LdapSourceSettings.model_validate(
        {
            "name": "big",
            "url": slapd.url,
            "start_tls": True,
            "ca_file": str(slapd.ca),
            "bind_dn": SYNC_DN,  # capped at 1,000 entries per search unless it pages; a refresh cannot page
            "bind_password": SYNC_PASSWORD,
            "content_sync": "on",
            "users": {"base_dn": f"ou=big,{SUFFIX}"},
        }
    )
    source = LdapSource(settings)
    first = source.pull()
    assert first.complete and len(first.identities) == BIG_USERS  # paged
    assert source._content is not None
    source._content.sessions["users"].cookie = b"rid=000,csn=19700101000000.000000Z#000000#000#000000"
    again = source.pull()  # every entry would be sent again: over the limit, so a full (paged) pull
    assert again.complete and not again.change_based and len(again.identities) == BIG_USERS


def test_serve_schedules_the_daily_true_full_pull(tmp_path: Path) -> None:
    from syncd.scheduler import PullScheduler
    from syncd.settings import settings_from_dict

    def ldap(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "url": "ldap://127.0.0.1:1", "users": {"base_dn": "dc=x"}, **extra}

    settings = settings_from_dict(
        {
            "database": {"url": f"sqlite:///{tmp_path}/s.db"},
            "litellm": {"url": "http://127.0.0.1:1", "master_key": "sk-test-key"},
            "ldap": [
                ldap("daily", schedule={"full": "1h"}),
                ldap("weekly", schedule={"full": "1h", "verify": "0 3 * * 0"}),
                ldap("plain", schedule={"full": "1h"}, content_sync="off"),
            ],
        }
    )
    scheduler = PullScheduler(settings, None, on_pulled=lambda *_: None, is_leader=lambda: False)
    scheduler.start()
    try:
        jobs = {job.id: job for job in scheduler.scheduler.get_jobs()}
        assert {"daily:verify", "weekly:verify"} <= jobs.keys() and "plain:verify" not in jobs
        assert jobs["daily:verify"].trigger.interval_length == 24 * 3600
        assert jobs["weekly:verify"].kwargs == {"incremental": False, "true_full": True}
    finally:
        scheduler.shutdown()
