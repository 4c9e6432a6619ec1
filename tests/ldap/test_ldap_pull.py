"""Full and incremental pulls against a real slapd: identities, groups, nesting, member attributes, safety."""

from __future__ import annotations

import dataclasses
import time

import ldap3
import pytest
from _slapd import LIMITED_DN, SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd
from _tree import BIG_USERS, Tree

from syncd.model import Snapshot
from syncd.sources.ldap import LdapSource

pytestmark = pytest.mark.slapd


def by_user_id(snapshot: Snapshot) -> dict[str, str]:
    """user_id -> external_id of the snapshot's identities."""
    return {identity.user_id: identity.external_id for identity in snapshot.identities}


def members_by_name(snapshot: Snapshot) -> dict[str, frozenset[str]]:
    """group name -> member external ids."""
    return {group.name: group.members for group in snapshot.groups}


def test_full_pull_reads_people_and_expands_nested_groups(tree: Tree) -> None:
    alice = tree.add_user("alice", cn="Alice Liddell")
    tree.add_user("bob", mail=None)
    carol = tree.add_user("carol")
    inner = tree.add_group("inner", [carol])
    outer = tree.add_group("outer", [alice, inner, f"uid=ghost,ou=people,{tree.base}"])

    snapshot = tree.source().pull()

    assert snapshot.complete and not snapshot.incremental and snapshot.problems == []
    ids = by_user_id(snapshot)
    assert set(ids) == {"alice", "bob", "carol"}
    assert ids["alice"] == tree.entry_uuid(alice)
    first = next(i for i in snapshot.identities if i.user_id == "alice")
    assert (first.email, first.display_name, first.active, first.dn) == (
        "alice@example.org",
        "Alice Liddell",
        True,
        alice,
    )
    assert members_by_name(snapshot) == {"inner": {ids["carol"]}, "outer": {ids["alice"], ids["carol"]}}
    groups = {g.name: g for g in snapshot.groups}
    assert groups["outer"].external_id == tree.entry_uuid(outer) and groups["outer"].dn == outer
    assert next(i for i in snapshot.identities if i.user_id == "bob").email == ""  # created without one
    assert snapshot.counters["no_email"] == 1 and "skipped_no_email" not in snapshot.counters
    assert snapshot.counters["dangling_members"] == 1
    assert snapshot.high_water_mark and snapshot.high_water_mark.startswith("ts:")


def test_without_nesting_only_direct_members_count(tree: Tree) -> None:
    alice, carol = tree.add_user("alice"), tree.add_user("carol")
    inner = tree.add_group("inner", [carol])
    tree.add_group("outer", [alice, inner])

    snapshot = tree.source(groups={"nested": False}).pull()

    ids = by_user_id(snapshot)
    assert members_by_name(snapshot)["outer"] == {ids["alice"]}
    assert "dangling_members" not in snapshot.counters  # a group member is not dangling


def test_group_cycle_is_tolerated(tree: Tree) -> None:
    alice, bob = tree.add_user("alice"), tree.add_user("bob")
    a = tree.add_group("cycle-a", [alice])
    b = tree.add_group("cycle-b", [bob, a])
    tree.add_member(a, b)

    snapshot = tree.source().pull()

    ids = by_user_id(snapshot)
    assert snapshot.complete
    assert members_by_name(snapshot) == {"cycle-a": {ids["alice"], ids["bob"]}, "cycle-b": {ids["alice"], ids["bob"]}}
    assert snapshot.counters["group_cycles"] == 2


def test_nesting_stops_at_max_depth(tree: Tree) -> None:
    users = [tree.add_user(f"u{i}") for i in range(4)]
    child = tree.add_group("g3", [users[3]])
    for level in (2, 1, 0):
        child = tree.add_group(f"g{level}", [users[level], child])

    snapshot = tree.source(groups={"max_depth": 2}).pull()

    ids = by_user_id(snapshot)
    assert members_by_name(snapshot)["g0"] == {ids["u0"], ids["u1"], ids["u2"]}
    assert members_by_name(snapshot)["g1"] == {ids["u1"], ids["u2"], ids["u3"]}
    assert snapshot.counters["depth_limit_reached"] == 1


def test_posix_group_member_uid(tree: Tree) -> None:
    tree.add_user("alice")
    tree.add_user("carol")
    tree.add_group("posix", ["alice", "CAROL", "ghost"], kind="posixGroup")

    snapshot = tree.source(groups={"member_attribute": "memberUid"}).pull()

    ids = by_user_id(snapshot)
    assert members_by_name(snapshot) == {"posix": {ids["alice"], ids["carol"]}}
    assert snapshot.counters["dangling_members"] == 1


def test_unique_member_with_optional_uid_and_odd_spelling(tree: Tree) -> None:
    tree.add_user("alice")
    tree.add_user("carol")
    alice_spelt = f"uid=alice,ou=people,{tree.base}#'0101'B"
    carol_spelt = f"UID=Carol, OU=People,{tree.base.upper()}"
    tree.add_group("unique", [alice_spelt, carol_spelt], kind="groupOfUniqueNames")

    snapshot = tree.source(groups={"member_attribute": "uniqueMember"}).pull()

    ids = by_user_id(snapshot)
    assert members_by_name(snapshot) == {"unique": {ids["alice"], ids["carol"]}}


def test_paged_search_reads_past_the_accounts_size_limit(slapd: Slapd) -> None:
    server = slapd
    conn = ldap3.Connection(ldap3.Server(server.url), SYNC_DN, SYNC_PASSWORD, auto_bind=True)
    conn.search(f"ou=big,{SUFFIX}", "(objectClass=inetOrgPerson)", attributes=["uid"])
    assert conn.result["result"] == 4, "the fixture's sync account must be capped at 1,000 entries without paging"
    conn.unbind()
    tree = Tree(server, conn, f"ou=big,{SUFFIX}")
    settings = tree.settings(users={"base_dn": f"ou=big,{SUFFIX}"}, groups=None, page_size=200)

    snapshot = LdapSource(settings).pull()

    assert snapshot.complete, snapshot.problems
    assert len(snapshot.identities) == BIG_USERS
    assert len({i.external_id for i in snapshot.identities}) == BIG_USERS


def test_size_limit_makes_the_pull_incomplete(slapd: Slapd) -> None:
    tree = Tree(slapd, None, f"ou=big,{SUFFIX}")  # type: ignore[arg-type]

    source = LdapSource(tree.settings(users={"base_dn": f"ou=big,{SUFFIX}"}, groups=None, bind_dn=LIMITED_DN))
    snapshot = source.pull()

    assert not snapshot.complete
    assert snapshot.identities == [] and snapshot.groups == []
    assert "size limit exceeded" in snapshot.problems[0]


def test_empty_user_result_is_incomplete(tree: Tree) -> None:
    snapshot = tree.source().pull()

    assert not snapshot.complete
    assert "returned no entries" in snapshot.problems[0]


def test_groups_suddenly_empty_is_incomplete(tree: Tree) -> None:
    tree.add_user("alice")
    group = tree.add_group("team", [f"uid=alice,{tree.people}"])
    source = tree.source()
    assert source.pull().complete
    tree.delete(group)

    snapshot = source.pull()

    assert not snapshot.complete and snapshot.groups == [] and snapshot.identities == []
    assert "group search" in snapshot.problems[0]


def test_locked_account_is_inactive(tree: Tree) -> None:
    tree.add_user("alice")
    bob = tree.add_user("bob")
    tree.replace(bob, pwdAccountLockedTime="000001010000Z")

    snapshot = tree.source().pull()

    active = {i.user_id: i.active for i in snapshot.identities}
    assert active == {"alice": True, "bob": False}
    assert snapshot.counters["disabled"] == 1


def test_disabled_filter_is_configurable(tree: Tree) -> None:
    tree.add_user("alice", employeeType="disabled")
    tree.add_user("bob", employeeType="staff")

    snapshot = tree.source(users={"disabled_filter": "(employeeType=disabled)"}).pull()

    assert {i.user_id: i.active for i in snapshot.identities} == {"alice": False, "bob": True}


def test_rename_keeps_the_external_id_and_memberships(tree: Tree) -> None:
    alice = tree.add_user("alice")
    tree.add_group("team", [alice])
    source = tree.source()
    before = source.pull()
    tree.rename(alice, "uid=alicia")

    after = source.pull()

    assert by_user_id(after) == {"alicia": by_user_id(before)["alice"]}
    assert members_by_name(after)["team"] == {by_user_id(before)["alice"]}


def test_mail_change_is_an_update(tree: Tree) -> None:
    alice = tree.add_user("alice")
    source = tree.source()
    before = source.pull()
    tree.replace(alice, mail="alice.liddell@example.org")

    after = source.pull(since=before.high_water_mark)

    assert after.incremental and after.complete
    [identity] = after.identities
    assert (identity.external_id, identity.email) == (before.identities[0].external_id, "alice.liddell@example.org")


def test_delete_is_seen_by_the_next_full_pull_only(tree: Tree) -> None:
    tree.add_user("alice")
    bob = tree.add_user("bob")
    source = tree.source()
    first = source.pull()
    tree.delete(bob)

    incremental = source.pull(since=first.high_water_mark)
    full = source.pull()

    assert incremental.incremental and "bob" in by_user_id(first)
    assert "bob" not in by_user_id(incremental)  # an incremental pull never implies a deletion ...
    assert not full.incremental and set(by_user_id(full)) == {"alice"}  # ... the next full pull shows it


def test_membership_change_is_seen_only_on_the_group(tree: Tree) -> None:
    alice, bob = tree.add_user("alice"), tree.add_user("bob")
    inner = tree.add_group("inner", [alice])
    tree.add_group("outer", [inner])
    tree.add_group("other", [alice])
    source = tree.source(incremental_overlap_s=0)
    first = source.pull()
    time.sleep(2.1)  # timestamps have one-second resolution: let the mark pass the setup's changes
    tree.add_user("zed")
    second = source.pull(since=first.high_water_mark)
    bob_changed = _modify_timestamp(tree, bob)
    tree.add_member(inner, bob)

    third = source.pull(since=second.high_water_mark)

    assert _modify_timestamp(tree, bob) == bob_changed, "adding a member must not touch the user's entry"
    ids = by_user_id(first)
    assert third.incremental and third.complete
    assert "bob" not in by_user_id(third)
    assert members_by_name(third) == {"inner": {ids["alice"], ids["bob"]}, "outer": {ids["alice"], ids["bob"]}}


def _modify_timestamp(tree: Tree, dn: str) -> str:
    tree.conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["modifyTimestamp"])
    return str(tree.conn.entries[0].modifyTimestamp.value)


def test_incremental_without_an_index_falls_back_to_a_full_pull(tree: Tree) -> None:
    tree.add_user("alice")
    mark = tree.source().pull().high_water_mark

    snapshot = tree.source().pull(since=mark)

    assert snapshot.complete and not snapshot.incremental
    assert snapshot.counters["incremental_fallback"] == 1
    assert set(by_user_id(snapshot)) == {"alice"}


def test_check_counts_users_and_groups(tree: Tree) -> None:
    tree.add_user("alice")
    tree.add_user("bob", mail=None)
    tree.add_group("team", [f"uid=alice,{tree.people}"])

    check = tree.source().check()

    assert (check.server, check.users, check.groups, check.warnings) == (tree.server.url, 2, 1, ())


def test_incremental_after_a_rename_rereads_groups_naming_the_old_name(tree: Tree) -> None:
    alice = tree.add_user("alice")
    tree.add_user("bob")
    tree.add_group("posix", ["alice", "bob"], kind="posixGroup")  # memberUid values are not rewritten on a rename
    time.sleep(2.1)  # so that the mark passes the group's own timestamp: only the rename can bring it back
    tree.add_user("zed")
    source = tree.source(groups={"member_attribute": "memberUid"}, incremental_overlap_s=0)
    first = source.pull()
    tree.rename(alice, "uid=alicia")

    changed = source.pull(since=first.high_water_mark)
    full = tree.source(groups={"member_attribute": "memberUid"}).pull()

    assert changed.incremental and changed.counters["groups_read"] == 0
    assert changed.counters["groups_reread"] == 1
    assert members_by_name(changed) == members_by_name(full) == {"posix": {by_user_id(first)["bob"]}}


def test_a_referral_inside_the_tree_makes_the_pull_incomplete(tree: Tree) -> None:
    tree.add_user("alice")
    elsewhere = f"ldap://directory.elsewhere.example/ou=people,{SUFFIX}"
    referral = {"ou": "remote", "ref": elsewhere}
    assert tree.conn.add(f"ou=remote,{tree.people}", ["referral", "extensibleObject"], referral), tree.conn.result

    snapshot = tree.source().pull()

    assert not snapshot.complete and snapshot.identities == []
    assert "referred" in snapshot.problems[0] and elsewhere in snapshot.problems[0]


def test_failover_to_another_domain_controller_turns_an_incremental_into_a_full_pull(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree.add_user("alice")
    source = tree.source()
    source.attrs = dataclasses.replace(source.attrs, change_attribute="uSNChanged")  # as on Active Directory
    marks = iter(["usn:dc1:500", "usn:dc2:9000"])
    monkeypatch.setattr(type(source), "_usn_mark", lambda self, conn: next(marks))
    first = source.pull()

    second = source.pull(since=first.high_water_mark)  # served by dc2: dc1's USNs mean nothing there

    assert first.high_water_mark == "usn:dc1:500"
    assert second.complete and not second.incremental and second.counters["incremental_fallback"] == 1
    assert second.high_water_mark == "usn:dc2:9000" and set(by_user_id(second)) == {"alice"}
