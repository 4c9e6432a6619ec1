"""PATCH and PUT of a user from the version this process last saw (syncd.scim.recent), on PostgreSQL.

Two apps over one database stand for two replicas: what one writes, the other's remembered users do not know. A
write computed from a remembered user must still land on the current row (or answer as the current row says).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from syncd.scim.recent import RecentUsers
from syncd.store.scim import UserRecord

from .conftest import Scim, open_scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


@pytest.fixture
def replicas(postgres: Any) -> Iterator[tuple[Scim, Scim]]:
    """Two SCIM apps (each with its own remembered users) over one PostgreSQL database."""
    url = postgres.create("syncd_scim")
    first = open_scim(url)
    one = next(first)
    second = open_scim(url)
    two = next(second)
    yield one, two
    for opened in (second, first):
        next(opened, None)


def _new_user(scim: Scim, name: str = "ada@example.com") -> dict[str, Any]:
    created = scim.post("/Users", {"schemas": [USER], "userName": name, "title": "engineer"})
    assert created.status_code == 201, created.text
    return dict(created.json())


def _title(value: str) -> dict[str, Any]:
    return {"op": "replace", "path": "title", "value": value}


class _Statements:
    """The SQL statements an engine runs while counting."""

    def __init__(self, engine: Any) -> None:
        self.seen: list[str] = []
        event.listen(engine, "before_cursor_execute", self._record)
        self.engine = engine

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement.lstrip().split()[0].upper())

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


@pytest.mark.postgres
def test_patch_after_post_is_one_statement(replicas: tuple[Scim, Scim]) -> None:
    one, _two = replicas
    user = _new_user(one)
    counted = _Statements(one.engine)
    try:
        patched = one.patch(f"/Users/{user['id']}", _title("lead"))
    finally:
        counted.close()
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "lead"
    assert counted.seen == ["WITH"]  # the write alone: the user is not read first


@pytest.mark.postgres
def test_a_write_from_an_outdated_user_lands_on_the_current_row(replicas: tuple[Scim, Scim]) -> None:
    one, two = replicas
    user = _new_user(one)
    path = f"/Users/{user['id']}"
    moved = two.patch(path, {"op": "replace", "path": "displayName", "value": "Ada L."})
    assert moved.json()["meta"]["version"] == 'W/"2"'
    patched = one.patch(path, _title("lead"))  # one remembers version 1
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["title"], body["displayName"], body["meta"]["version"]) == ("lead", "Ada L.", 'W/"3"')
    assert one.get(path).json() == body


@pytest.mark.postgres
def test_a_patch_to_nothing_from_an_outdated_user_is_decided_on_the_row(replicas: tuple[Scim, Scim]) -> None:
    one, two = replicas
    user = _new_user(one)  # one remembers title "engineer"
    path = f"/Users/{user['id']}"
    assert two.patch(path, _title("manager")).status_code == 200
    again = one.patch(path, _title("engineer"))  # nothing to do for one's memory, a change for the row
    assert again.status_code == 200, again.text
    assert (again.json()["title"], again.json()["meta"]["version"]) == ("engineer", 'W/"3"')
    assert two.get(path).json()["title"] == "engineer"
    unchanged = one.patch(path, _title("engineer"))
    assert unchanged.json()["meta"]["version"] == 'W/"3"'


@pytest.mark.postgres
def test_if_match_is_checked_against_the_row_not_the_memory(replicas: tuple[Scim, Scim]) -> None:
    one, two = replicas
    user = _new_user(one)
    path = f"/Users/{user['id']}"
    assert two.patch(path, _title("manager")).status_code == 200  # the row is at 2, one remembers 1
    stale = one.patch(path, _title("x"), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412, stale.text
    current = one.patch(path, _title("y"), headers={"If-Match": 'W/"2"'})
    assert current.status_code == 200, current.text
    assert current.json()["meta"]["version"] == 'W/"3"'
    replaced = {"schemas": [USER], "userName": "ada@example.com", "title": "z"}
    assert one.put(path, replaced, headers={"If-Match": 'W/"2"'}).status_code == 412
    assert one.put(path, replaced, headers={"If-Match": 'W/"3"'}).status_code == 200


@pytest.mark.postgres
def test_a_user_deleted_elsewhere_is_not_found(replicas: tuple[Scim, Scim]) -> None:
    one, two = replicas
    user = _new_user(one)
    path = f"/Users/{user['id']}"
    assert two.delete(path).status_code == 204
    assert one.patch(path, _title("ghost")).status_code == 404
    assert one.put(path, {"schemas": [USER], "userName": "ada@example.com"}).status_code == 404


@pytest.mark.postgres
def test_the_response_shows_groups_joined_after_the_user_was_remembered(replicas: tuple[Scim, Scim]) -> None:
    one, two = replicas
    user = _new_user(one)
    group = two.post("/Groups", {"schemas": [GROUP], "displayName": "admins", "members": [{"value": user["id"]}]})
    assert group.status_code == 201, group.text
    patched = one.patch(f"/Users/{user['id']}", _title("lead"))
    assert [g["display"] for g in patched.json()["groups"]] == ["admins"]


@pytest.mark.postgres
def test_a_rename_onto_a_taken_user_name_is_409_from_memory_too(replicas: tuple[Scim, Scim]) -> None:
    one, _two = replicas
    _new_user(one, "grace@example.com")
    user = _new_user(one)
    renamed = one.patch(f"/Users/{user['id']}", {"op": "replace", "path": "userName", "value": "Grace@example.com"})
    assert renamed.status_code == 409, renamed.text
    assert renamed.json()["scimType"] == "uniqueness"


def _record(id: str, version: int, title: str) -> UserRecord:
    now = datetime.now(UTC)
    return UserRecord(1, id, "u", "u", True, None, {"title": title}, version, now, now, (("g", "G"),))


def test_recent_users_keep_the_latest_version_and_the_capacity() -> None:
    recent = RecentUsers(2)
    recent.put("okta", _record("a", 2, "new"))
    recent.put("okta", _record("a", 1, "old"))  # an older read arriving late changes nothing
    seen = recent.get("okta", "a")
    assert seen is not None and (seen.version, seen.resource, seen.groups) == (2, {"title": "new"}, ())
    seen.resource["title"] = "changed by a caller"  # type: ignore[index]
    again = recent.get("okta", "a")
    assert again is not None and again.resource == {"title": "new"}
    recent.put("okta", _record("b", 1, "b"))
    recent.get("okta", "a")  # a is now the most recently used
    recent.put("okta", _record("c", 1, "c"))
    assert (recent.get("okta", "a") is not None, recent.get("okta", "b"), len(recent)) == (True, None, 2)
    assert recent.get("entra", "a") is None
    recent.drop("okta", "a")
    assert recent.get("okta", "a") is None


def test_recent_users_of_capacity_zero_remember_nothing() -> None:
    recent = RecentUsers(0)
    recent.put("okta", _record("a", 1, "x"))
    assert recent.get("okta", "a") is None and len(recent) == 0
