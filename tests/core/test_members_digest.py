"""The members digest updated by difference is the digest computed whole, and migration 0008 computes the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from syncd.model import Group, Identity, Snapshot
from syncd.store import make_engine, upgrade
from syncd.store.members_digest import EMPTY, MembersDigest
from syncd.store.repository import SyncStore
from syncd.store.tables import groups

_MEMBERS = st.dictionaries(st.sampled_from([f"e{n}" for n in range(12)]), st.sampled_from([None, "g2", "g3"]))


def _lines(members: dict[str, str | None]) -> set[tuple[str, str | None]]:
    return set(members.items())


def _whole(digests: MembersDigest, members: dict[str, str | None]) -> str:
    return digests.whole(set(members), {m: via for m, via in members.items() if via})


@given(before=_MEMBERS, after=_MEMBERS)
def test_a_digest_updated_by_the_difference_equals_the_digest_of_the_new_set(
    before: dict[str, str | None], after: dict[str, str | None]
) -> None:
    digests = MembersDigest()
    old, new = _lines(before), _lines(after)
    updated = digests.updated(_whole(digests, before), new - old, old - new)
    assert updated == _whole(MembersDigest(), after)
    assert (updated == _whole(digests, before)) == (before == after)  # equal digests <=> equal member lines


def test_a_line_counted_twice_is_not_the_same_as_once() -> None:
    """What XOR would get wrong: adding a present member again must move the digest, not cancel it."""
    digests = MembersDigest()
    one = digests.whole({"e1"}, {})
    assert digests.updated(one, [("e1", None)], []) not in (one, EMPTY)
    assert digests.updated(one, [], [("e1", None)]) == EMPTY == digests.whole(set(), {})


def person(n: int) -> Identity:
    return Identity("corp", f"e{n}", f"u{n}", f"u{n}@example.com", dn=f"uid=u{n},dc=example,dc=com")


@pytest.fixture
def engine_at_0007(database_url: str) -> Iterator[object]:
    engine = make_engine(database_url)
    upgrade(engine, "0007")
    yield engine
    engine.dispose()


def test_migration_0008_recomputes_the_recorded_digests_as_a_record_would(
    engine_at_0007: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import Engine

    assert isinstance(engine_at_0007, Engine)
    people = [person(n) for n in range(1, 6)]
    nested = Group("corp", "g1", "all", members=frozenset({"e1", "e2", "e3"}), via={"e3": "g2"})
    child = Group("corp", "g2", "child", members=frozenset({"e3"}))
    empty = Group("corp", "g3", "none")
    snapshot = Snapshot("corp", identities=people, groups=[nested, child, empty])
    store = SyncStore(engine_at_0007)
    with monkeypatch.context() as patched:  # no source_index table before 0008
        patched.setattr(SyncStore, "_save_sync_index", staticmethod(lambda *_: None))
        store.record_snapshot(snapshot)
    with engine_at_0007.begin() as conn:  # as the code of revision 0007 left them: some digest, not this one
        conn.execute(update(groups).values(members_digest="0" * 63 + "1"))
    upgrade(engine_at_0007)
    with engine_at_0007.connect() as conn:
        migrated = dict(conn.execute(select(groups.c.external_id, groups.c.members_digest)).all())
    digests = MembersDigest()
    assert migrated == {g.external_id: digests.whole(g.members, g.via) for g in (nested, child, empty)}
    again = store.record_snapshot(snapshot)  # row digests were cleared: compared in full once, no change reported
    assert not again.changed and again.groups_updated == 0
