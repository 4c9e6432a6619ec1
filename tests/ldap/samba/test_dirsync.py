"""DirSync against a real Samba AD DC: change-based pulls, recorded, reach the state of a fresh full pull (member
deltas in the incremental-values form, tombstones as deletions); without the Replicating Directory Changes right the
source keeps the uSNChanged path and says so."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import ldap3
import pytest
from _stores import new_store, store_at
from _stores import present as present_in
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from syncd.model import Snapshot
from syncd.settings.ldap import LdapSourceSettings
from syncd.sources.ldap import LdapSource
from syncd.store.repository import SyncStore

from ._domain import SambaDomain
from .conftest import Directory

pytestmark = pytest.mark.samba

_serial = itertools.count(1)


def present(store: SyncStore, source: str = "ad") -> dict[str, Any]:
    """What the store holds as present for this suite's source."""
    return present_in(store, source)


class Branch:
    """A test's own OU with people and groups, written as the domain administrator."""

    def __init__(self, domain: SambaDomain, conn: ldap3.Connection) -> None:
        self.domain, self.conn = domain, conn
        self.number = next(_serial)
        self.base = domain.add_ou(conn, f"ds{self.number}")
        self.people = self._ou("people")
        self.groups = self._ou("groups")

    def _ou(self, name: str) -> str:
        dn = f"OU={name},{self.base}"
        assert self.conn.add(dn, ["top", "organizationalUnit"], {"ou": name}), self.conn.result
        return dn

    def user(self, name: str) -> str:
        """A user with mail; sAMAccountName is unique in the domain, so it carries the branch's number."""
        sam = f"{name}-{self.number}"
        return self.domain.add_user(self.conn, sam, mail=f"{sam}@syncd.test", container=self.people)

    def group(self, name: str, members: list[str]) -> str:
        """A global group of `members`, named uniquely in the domain."""
        return self.domain.add_group(self.conn, f"{name}-{self.number}", self.groups, members)

    def modify(self, dn: str, **changes: list[tuple[str, list[Any]]]) -> None:
        assert self.conn.modify(dn, changes), self.conn.result

    def settings(self, **extra: Any) -> LdapSourceSettings:
        data: dict[str, Any] = {
            "name": "ad",
            "url": self.domain.url,
            "ca_file": str(self.domain.ca_file),
            "bind_dn": self.domain.admin_dn,  # holds Replicating Directory Changes
            "bind_password": self.domain.admin_password,
            "dialect": "active_directory",
            "page_size": 50,
            "users": {"base_dn": self.people},
            "groups": {"base_dn": self.groups, "nested": True},
            **extra,
        }
        return LdapSourceSettings.model_validate(data)

    def full_state(self, tmp_path: Path) -> dict[str, Any]:
        store = new_store(tmp_path / "full.db")
        snapshot = LdapSource(self.settings(content_sync="off")).pull()
        assert snapshot.complete, snapshot.problems
        store.record_snapshot(snapshot)
        return present(store)


def same(left: dict[str, Any], right: dict[str, Any]) -> None:
    """Assert two store states are equal, naming the rows that differ."""
    for part in ("identities", "groups", "memberships"):
        keys = left[part].keys() | right[part].keys()
        differ = {k: (left[part].get(k), right[part].get(k)) for k in keys if left[part].get(k) != right[part].get(k)}
        assert not differ, f"{part} differ (change-based, full): {differ}"


def pull_recorded(source: LdapSource, store: SyncStore) -> Snapshot:
    snapshot = source.pull()
    assert snapshot.complete, snapshot.problems
    store.record_snapshot(snapshot)
    return snapshot


def test_dirsync_pulls_reach_the_state_of_a_full_pull(
    samba_domain: SambaDomain, admin: ldap3.Connection, tmp_path: Path, database_url: str
) -> None:
    branch = Branch(samba_domain, admin)
    ann, ben, cat, dan = (branch.user(n) for n in ("ann", "ben", "cat", "dan"))
    inner = branch.group("inner", [ann])
    outer = branch.group("outer", [ben, inner])
    solo = branch.group("solo", [cat, dan])
    source = LdapSource(branch.settings())
    store = store_at(database_url)  # SQLite and PostgreSQL
    first = pull_recorded(source, store)
    assert first.counters.get("content_sync_started") == 1 and source.content_synced

    quiet = pull_recorded(source, store)
    assert quiet.change_based and not quiet.identities and not quiet.removed_identities

    branch.modify(inner, member=[(ldap3.MODIFY_ADD, [dan])])  # a delta, nested into outer
    branch.modify(solo, member=[(ldap3.MODIFY_DELETE, [cat])])
    branch.modify(ben, mail=[(ldap3.MODIFY_REPLACE, ["benjamin@syncd.test"])])
    branch.modify(cat, userAccountControl=[(ldap3.MODIFY_REPLACE, ["514"])])  # disabled
    changed = pull_recorded(source, store)
    assert changed.change_based and changed.counters.get("member_deltas", 0) >= 2
    same(present(store), branch.full_state(tmp_path))

    guid = samba_domain.guid(admin, dan)
    assert admin.delete(dan), admin.result  # a tombstone; AD takes dan out of inner and solo
    assert admin.modify_dn(ann, "CN=annie"), admin.result  # a rename: the groups still list her
    assert admin.delete(solo), admin.result
    eve = branch.user("eve")
    branch.modify(outer, member=[(ldap3.MODIFY_ADD, [eve])])
    gone = pull_recorded(source, store)
    assert guid in gone.removed_identities and len(gone.removed_groups) == 1
    same(present(store), branch.full_state(tmp_path))


def test_a_member_delta_and_a_renamed_member_of_the_same_group(
    samba_domain: SambaDomain, admin: ldap3.Connection, tmp_path: Path
) -> None:
    branch = Branch(samba_domain, admin)
    kay, lou = branch.user("kay"), branch.user("lou")
    crew = branch.group("crew", [kay])
    source = LdapSource(branch.settings())
    store = new_store(tmp_path / "rename.db")
    pull_recorded(source, store)
    assert admin.modify_dn(kay, "CN=kathryn"), admin.result  # AD rewrites crew's value, without a change to crew
    branch.modify(crew, member=[(ldap3.MODIFY_ADD, [lou])])  # crew's only change DirSync reports: a delta
    assert pull_recorded(source, store).change_based
    same(present(store), branch.full_state(tmp_path))


def test_a_new_process_continues_dirsync_from_the_store(
    samba_domain: SambaDomain, admin: ldap3.Connection, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from syncd.pull import pull_sources

    branch = Branch(samba_domain, admin)
    mo, ned, ola = branch.user("mo"), branch.user("ned"), branch.user("ola")
    team = branch.group("team", [mo, ned])
    config = SimpleNamespace(ldap=[branch.settings()])
    store = new_store(tmp_path / "resume.db")
    pull_sources(config, store, record=True, sources={})  # one process: DirSync started, index stored
    branch.modify(team, member=[(ldap3.MODIFY_ADD, [ola])])
    assert admin.delete(mo), admin.result
    snapshots, failed = pull_sources(config, store, record=True, sources={})  # another process
    assert failed == [] and snapshots[0].change_based and snapshots[0].counters.get("content_sync_resumed") == 1
    same(present(store), branch.full_state(tmp_path))


def test_without_the_right_the_usn_path_is_kept_and_said_once(
    samba_domain: SambaDomain, admin: ldap3.Connection, directory: Directory, caplog: pytest.LogCaptureFixture
) -> None:
    branch = Branch(samba_domain, admin)
    branch.group("crew", [branch.user("fay")])
    reader = branch.settings(bind_dn=directory.reader_dn, bind_password=directory.reader_password)
    source = LdapSource(reader)
    caplog.set_level(logging.WARNING)
    first, second = source.pull(), source.pull()
    assert first.complete and second.complete and not first.change_based and not second.change_based
    assert len([r for r in caplog.records if "Replicating Directory Changes" in r.getMessage()]) == 1
    assert any("Replicating Directory Changes" in w for w in LdapSource(reader).check().warnings)
    assert any(w.startswith("DirSync: used") for w in LdapSource(branch.settings()).check().warnings)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["user", "mail", "rename", "join", "leave", "delete", "disable", "group", "ungroup"]),
        st.integers(0, 100),
        st.integers(0, 100),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_OPS, min_size=1, max_size=2))
def test_dirsync_equals_a_full_pull_after_random_changes(
    samba_domain: SambaDomain, admin: ldap3.Connection, tmp_path: Path, batches: list[list[tuple[str, int, int]]]
) -> None:
    note(f"batches: {batches}")
    branch = Branch(samba_domain, admin)
    users = [branch.user(f"r{next(_serial)}") for _ in range(3)]
    groups = [branch.group(f"rg{next(_serial)}", users[:2])]
    groups.append(branch.group(f"rg{next(_serial)}", [users[2], groups[0]]))
    source = LdapSource(branch.settings())
    store = new_store(tmp_path / "property.db")
    pull_recorded(source, store)
    for batch in batches:
        for op, a, b in batch:
            _apply(branch, users, groups, op, a, b)
        assert pull_recorded(source, store).change_based
        same(present(store), branch.full_state(tmp_path))


def _apply(branch: Branch, users: list[str], groups: list[str], op: str, a: int, b: int) -> None:
    conn = branch.conn
    if op == "user" or not users:
        users.append(branch.user(f"r{next(_serial)}"))
        return
    user = users[a % len(users)]
    if op == "group" or not groups:
        groups.append(branch.group(f"rg{next(_serial)}", [user]))
        return
    group = groups[b % len(groups)]
    values = branch.domain.read(conn, group, "member")["member"]
    members = {(m.decode() if isinstance(m, bytes) else str(m)).lower() for m in values}
    if op == "mail":
        branch.modify(user, mail=[(ldap3.MODIFY_REPLACE, [f"m{next(_serial)}@syncd.test"])])
    elif op == "rename":
        new = f"CN=r{next(_serial)}"
        assert conn.modify_dn(user, new), conn.result
        users[a % len(users)] = f"{new},{user.split(',', 1)[1]}"
    elif op == "join" and user.lower() not in members:
        branch.modify(group, member=[(ldap3.MODIFY_ADD, [user])])
    elif op == "leave" and user.lower() in members:
        branch.modify(group, member=[(ldap3.MODIFY_DELETE, [user])])
    elif op == "delete" and len(users) > 1:  # no users at all is refused as suddenly empty
        assert conn.delete(user), conn.result
        users.remove(user)
    elif op == "disable":
        branch.modify(user, userAccountControl=[(ldap3.MODIFY_REPLACE, ["514" if a % 2 else "512"])])
    elif op == "ungroup" and len(groups) > 1:  # no groups at all is refused as suddenly empty
        assert conn.delete(group), conn.result
        groups.remove(group)
