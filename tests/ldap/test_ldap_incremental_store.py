"""Incremental pulls recorded into the store reach the same state as one full pull, after a series of changes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _tree import Tree

from syncd.sources.ldap import LdapSource
from syncd.store import make_engine
from syncd.store.repository import SyncStore
from syncd.store.tables import metadata

pytestmark = pytest.mark.slapd


def new_store(path: Path) -> SyncStore:
    """A SyncStore on a fresh SQLite file."""
    engine = make_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    return SyncStore(engine)


def pull_incremental(source: LdapSource, store: SyncStore) -> set[str]:
    """One incremental pull from the stored high-water mark, recorded; returns the names of the groups it carried.

    Then a pause: timestamps have one-second resolution, so the next batch of changes lands after the new mark
    and the next pull reads only what changed since (the overlap is 0 here; the mark's own second is read again).
    """
    snapshot = source.pull(since=store.source_state(source.name).high_water_mark)
    assert snapshot.complete and snapshot.incremental, snapshot.problems
    store.record_snapshot(snapshot)
    time.sleep(1.1)
    return {group.name for group in snapshot.groups}


def test_incremental_pulls_reach_the_state_of_a_full_pull(tree: Tree, tmp_path: Path) -> None:
    users = {uid: tree.add_user(uid) for uid in ("alice", "bob", "carol", "dave", "erin")}
    leaf = tree.add_group("leaf", [users["alice"]])
    middle = tree.add_group("middle", [users["bob"], leaf])
    top = tree.add_group("top", [middle])
    flat = tree.add_group("flat", [users["carol"], users["dave"]])
    source = tree.source(incremental_overlap_s=0)
    store = new_store(tmp_path / "incremental.db")
    store.record_snapshot(source.pull())
    time.sleep(1.1)

    tree.add_member(leaf, users["erin"])  # seen only on leaf; middle and top must follow through nesting
    assert {"leaf", "middle", "top"} <= pull_incremental(source, store)
    tree.replace(users["bob"], mail="robert@example.org")
    users["carol"] = tree.rename(users["carol"], "uid=caroline")  # refint rewrites flat's member value
    tree.replace(users["dave"], pwdAccountLockedTime="000001010000Z")
    pull_incremental(source, store)
    frank = tree.add_user("frank")
    extra = tree.add_group("extra", [frank, flat])
    tree.add_member(top, extra)
    tree.remove_member(middle, users["bob"])
    tree.remove_member(flat, users["dave"])
    pull_incremental(source, store)
    assert "leaf" not in pull_incremental(source, store)  # nothing new: only the last second is read again

    full_store = new_store(tmp_path / "full.db")
    full_store.record_snapshot(LdapSource(tree.settings()).pull())

    incremental_state, full_state = store.dump_source("corp"), full_store.dump_source("corp")
    assert incremental_state == full_state
    user_ids = {ext: person["user_id"] for ext, person in full_state["identities"].items()}
    group_ids = {group["name"]: ext for ext, group in full_state["groups"].items()}
    members = {
        name: sorted(user_ids[m] for m in full_state["memberships"].get(ext, ())) for name, ext in group_ids.items()
    }
    assert members == {
        "leaf": ["alice", "erin"],
        "middle": ["alice", "erin"],
        "top": ["alice", "caroline", "erin", "frank"],
        "flat": ["caroline"],
        "extra": ["caroline", "frank"],
    }
