"""Recording compares rows by digest: what that must never get wrong (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from syncd.model import Group, Identity, Snapshot
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.store.tables import groups, identities


@pytest.fixture
def store(database_url: str) -> Iterator[SyncStore]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield SyncStore(engine)
    engine.dispose()


def person(n: int, **changes: object) -> Identity:
    values: dict[str, object] = {
        "source": "corp",
        "external_id": f"e{n}",
        "user_id": f"u{n}@example.com",
        "email": f"u{n}@example.com",
        "display_name": f"User {n}",
        "dn": f"uid=u{n},ou=people,dc=example,dc=com",
    }
    return Identity(**(values | changes))  # type: ignore[arg-type]


def snapshot(people: list[Identity], members: frozenset[str] = frozenset({"e1", "e2"})) -> Snapshot:
    group = Group("corp", "g1", "llm-users", "cn=llm-users,ou=groups,dc=example,dc=com", members=members)
    return Snapshot("corp", identities=list(people), groups=[group])


def test_an_unchanged_pull_changes_nothing_and_a_changed_field_is_found(store: SyncStore) -> None:
    store.record_snapshot(snapshot([person(1), person(2), person(3)]))

    again = store.record_snapshot(snapshot([person(1), person(2), person(3)]))
    assert not again.changed and again.identities_updated == 0 and again.groups_updated == 0

    renamed = store.record_snapshot(snapshot([person(1), person(2, display_name="Renamed"), person(3)]))
    assert (renamed.identities_updated, renamed.affected_user_ids) == (1, {"u2@example.com"})
    overridden = store.record_snapshot(
        snapshot([person(1), person(2, display_name="Renamed"), person(3, overrides={"tpm_limit": 5})])
    )
    assert (overridden.identities_updated, overridden.affected_user_ids) == (1, {"u3@example.com"})
    assert store.dump_source("corp")["identities"]["e3"]["overrides"] == {"tpm_limit": 5}


def test_rows_without_a_digest_are_compared_in_full_once_and_given_one(store: SyncStore) -> None:
    """Rows written before the digest existed: equal values are no change; a different value still is."""
    people = [person(1), person(2), person(3)]
    store.record_snapshot(snapshot(people))
    with store.engine.begin() as conn:
        versions = dict(conn.execute(select(identities.c.external_id, identities.c.version)).all())
        conn.execute(update(identities).values(digest=None))
        conn.execute(update(groups).values(digest=None))

    result = store.record_snapshot(snapshot([person(1), person(2), person(3, email="new3@example.com")]))

    assert (result.identities_updated, result.groups_updated) == (1, 0)
    assert result.affected_user_ids == {"u3@example.com"}
    with store.engine.connect() as conn:
        rows = conn.execute(select(identities.c.external_id, identities.c.version, identities.c.digest)).all()
    assert all(row.digest for row in rows)
    assert {row.external_id: row.version for row in rows} == versions | {"e3": versions["e3"] + 1}


def test_members_and_their_nesting_are_compared_by_the_group_digest(store: SyncStore) -> None:
    store.record_snapshot(snapshot([person(1), person(2), person(3)]))

    joined = store.record_snapshot(snapshot([person(1), person(2), person(3)], frozenset({"e1", "e2", "e3"})))
    assert (joined.memberships_added, joined.affected_user_ids) == (1, {"u3@example.com"})

    nested = Group(
        "corp",
        "g1",
        "llm-users",
        "cn=llm-users,ou=groups,dc=example,dc=com",
        members=frozenset({"e1", "e2", "e3"}),
        via={"e3": "g2"},
    )
    child = Group("corp", "g2", "team", "cn=team,ou=groups,dc=example,dc=com", members=frozenset({"e3"}))
    rerouted = store.record_snapshot(
        Snapshot("corp", identities=[person(1), person(2), person(3)], groups=[nested, child])
    )
    assert rerouted.groups_updated == 1 and rerouted.groups_added == 1
    assert store.dump_source("corp")["memberships"]["g1"] == {"e1": None, "e2": None, "e3": "g2"}
    same = store.record_snapshot(Snapshot("corp", identities=[person(1), person(2), person(3)], groups=[nested, child]))
    assert not same.changed


def test_an_incremental_group_change_names_every_person_it_affects(store: SyncStore) -> None:
    """Serve reconciles only the users an incremental pull affected: someone who left a group is one of them, though
    the pull sent neither them nor anyone else but the group."""
    store.record_snapshot(snapshot([person(1), person(2), person(3)], frozenset({"e1", "e2"})))
    group = Group(
        "corp", "g1", "llm-users", "cn=llm-users,ou=groups,dc=example,dc=com", members=frozenset({"e1", "e3"})
    )

    result = store.record_snapshot(Snapshot("corp", incremental=True, groups=[group]))

    assert (result.memberships_added, result.memberships_removed) == (1, 1)
    assert result.affected_user_ids == {"u2@example.com", "u3@example.com"}
    assert store.dump_source("corp")["memberships"]["g1"] == {"e1": None, "e3": None}
