"""A new process continues the content sync from what the store keeps with the cookies (base and deltas of the
directory index), records what a full pull would, and falls back to a full pull when that state cannot be used."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _slapd import SYNC_PASSWORD
from _stores import new_store, store_at
from _stores import present as present_in
from _tree import Tree, write_cli_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from syncd.model import Snapshot
from syncd.pull import pull_sources
from syncd.sources.ldap import LdapSource
from syncd.store.repository import SyncStore
from syncd.store.tables import source_index
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

pytestmark = pytest.mark.slapd

MASTER = "sk-resume-test"


def present(store: SyncStore) -> dict[str, Any]:
    return present_in(store, "corp")


def full_state(tree: Tree, tmp_path: Path) -> dict[str, Any]:
    """The store's state after one plain full pull (content sync off) into a fresh store."""
    store = new_store(tmp_path / "full.db")
    snapshot = LdapSource(tree.settings(content_sync="off")).pull()
    assert snapshot.complete and not snapshot.change_based, snapshot.problems
    store.record_snapshot(snapshot)
    return present(store)


def process_pull(tree: Tree, store: SyncStore, cache: dict[str, Any] | None = None, **overrides: Any) -> Snapshot:
    """One recorded pull as `syncd sync` does it; a new `cache` is a new process."""
    config = SimpleNamespace(ldap=[tree.settings(content_sync="auto", **overrides)])
    snapshots, failed = pull_sources(config, store, record=True, sources={} if cache is None else cache)
    assert failed == [] and len(snapshots) == 1
    return snapshots[0]


def _directory(tree: Tree) -> dict[str, str]:
    users = {uid: tree.add_user(uid) for uid in ("ann", "ben", "cid", "dot", "eve", "fay")}
    inner = tree.add_group("inner", [users["ann"], users["ben"], users["cid"]])
    tree.add_group("outer", [users["dot"], users["eve"], inner])
    return {**users, "inner": inner}


def test_a_new_process_continues_the_content_sync_from_the_store(
    tree: Tree, tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dns = _directory(tree)
    store = store_at(database_url)  # SQLite and PostgreSQL
    serving: dict[str, Any] = {}
    first = process_pull(tree, store, serving)
    assert not first.change_based and first.sync_index_base
    tree.delete(dns["ann"])  # refint takes ann out of inner
    tree.add_member(dns["inner"], dns["fay"])
    assert process_pull(tree, store, serving).change_based  # a delta stored after the base
    tree.replace(dns["ben"], mail="benjamin@example.org")
    dns["cid"] = tree.rename(dns["cid"], "uid=cyd")
    tree.add_user("gus")
    caplog.set_level(logging.INFO)

    again = process_pull(tree, store)  # a new process: no index in memory
    assert again.change_based and again.counters.get("content_sync_resumed") == 1
    assert any("continued from the stored cookies" in r.getMessage() for r in caplog.records)
    assert present(store) == full_state(tree, tmp_path)
    assert store.source_state("corp").counters.get("content_sync_resumed") == 1
    tree.remove_member(dns["inner"], dns["ben"])
    later = process_pull(tree, store)  # a third process: the base and two deltas
    assert later.change_based and later.counters.get("content_sync_resumed") == 1
    assert present(store) == full_state(tree, tmp_path)


def test_other_settings_or_a_damaged_index_give_a_full_pull(tree: Tree, tmp_path: Path) -> None:
    _directory(tree)
    store = new_store(tmp_path / "resume.db")
    process_pull(tree, store)
    other = process_pull(tree, store, users={"require_email": True})  # the index depends on it: not continued
    assert not other.change_based and "content_sync_resumed" not in other.counters
    assert process_pull(tree, store, users={"require_email": True}).change_based  # the new base goes on
    with store.engine.begin() as conn:
        conn.execute(update(source_index).values(body=b"not zlib"))
    damaged = process_pull(tree, store, users={"require_email": True})
    assert damaged.complete and not damaged.change_based
    assert present(store) == full_state(tree, tmp_path)


def test_a_full_pull_without_content_sync_ends_the_stored_state(tree: Tree, tmp_path: Path) -> None:
    """Once a pull without cookies is recorded (content sync turned off), the stored index no longer matches the
    store: a later process must not continue from it."""
    dns = _directory(tree)
    store = new_store(tmp_path / "off.db")
    process_pull(tree, store)
    plain = LdapSource(tree.settings(content_sync="off")).pull()
    tree.delete(dns["eve"])
    store.record_snapshot(plain)
    assert store.source_state("corp").sync_cookie is None and store.sync_index("corp") == []
    assert not process_pull(tree, store).change_based


def test_a_pull_not_recorded_is_continued_from_the_recorded_state(tree: Tree, tmp_path: Path) -> None:
    dns = _directory(tree)
    store = new_store(tmp_path / "unrecorded.db")
    config = SimpleNamespace(ldap=[tree.settings(content_sync="auto")])
    cache: dict[str, Any] = {}
    pull_sources(config, store, record=True, sources=cache)
    tree.delete(dns["dot"])
    unrecorded, _ = pull_sources(config, store, record=False, sources=cache)  # as if the record had failed
    assert unrecorded[0].change_based and unrecorded[0].removed_identities
    again, _ = pull_sources(config, store, record=True, sources=cache)
    assert again[0].change_based and again[0].counters.get("content_sync_resumed") == 1
    assert present(store) == full_state(tree, tmp_path)


_OPS = st.lists(
    st.tuples(st.sampled_from(["delete", "mail", "join", "leave", "add", "rename"]), st.integers(0, 99)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_OPS, min_size=1, max_size=3))
def test_every_process_records_what_a_full_pull_would(
    tree_factory: Any, tmp_path: Path, batches: list[list[tuple[str, int]]]
) -> None:
    """Changes, each batch pulled by a new process (every other one) or by the same one: always the full state."""
    tree = tree_factory()
    people = [tree.add_user(f"q{i}") for i in range(6)]
    groups = [tree.add_group("qa", people[:4])]
    groups.append(tree.add_group("qb", [*people[3:], groups[0]]))
    store = new_store(tmp_path / "property.db")
    cache: dict[str, Any] = {}
    process_pull(tree, store, cache)
    for number, batch in enumerate(batches):
        for op, n in batch:
            person, group = people[n % len(people)], groups[n % 2]
            if op == "delete" and len(people) > 2:
                tree.delete(person)
                people.remove(person)
            elif op == "mail":
                tree.replace(person, mail=f"m{number}{n}@example.org")
            elif op in ("join", "leave"):
                conn = tree.conn
                assert conn.search(group, "(objectClass=*)", "BASE", attributes=["member"])
                members = {str(v).lower() for v in conn.entries[0].member.values}
                if op == "join" and person.lower() not in members:
                    tree.add_member(group, person)
                elif op == "leave" and person.lower() in members and len(members) > 1:
                    tree.remove_member(group, person)
            elif op == "add":
                people.append(tree.add_user(f"q{number}x{n}x{len(people)}"))
            elif op == "rename":
                people[n % len(people)] = tree.rename(person, f"uid=r{number}x{n}x{len(people)}")
        if number % 2 == 0:
            cache = {}  # a new process
        snapshot = process_pull(tree, store, cache)
        assert snapshot.change_based
        assert present(store) == full_state(tree, tmp_path)


def _syncd(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"BIND_PW": SYNC_PASSWORD, "PATH": "/usr/bin:/bin", "SYNCD_LOG_FORMAT": "text"}
    command = [sys.executable, "-m", "syncd", *args, "--config", str(path)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_a_second_syncd_sync_process_does_a_content_sync(tree: Tree, tmp_path: Path) -> None:
    dns = _directory(tree)
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        path = write_cli_config(tree, tmp_path, url, MASTER, group="outer", content_sync="auto")
        assert _syncd(path, "db", "upgrade").returncode == 0
        first = _syncd(path, "sync")
        assert first.returncode == 0, first.stderr
        assert "continued from the stored cookies" not in first.stderr
        assert {"dot", "eve", "ann", "ben", "cid"} <= set(app.state.fake.users)
        assert "fay" not in app.state.fake.users
        tree.add_member(dns["inner"], dns["fay"])  # fay joins outer through inner
        second = _syncd(path, "sync")
        assert second.returncode == 0, second.stderr
        assert "content sync continued from the stored cookies" in second.stderr
        assert "fay" in app.state.fake.users
    store = store_at(f"sqlite:///{tmp_path}/syncd.db")
    assert store.source_state("corp").counters.get("content_sync_resumed") == 1
    assert present(store) == full_state(tree, tmp_path)
