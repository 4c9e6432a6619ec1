"""The indexed values a user keeps in scim_user_values after any sequence of writes are exactly those of its stored
form, as a new user with that form would have them (a rewrite re-indexes only the attributes it changes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from syncd.scim.resources import index_values
from syncd.scim.schemas import ENTERPRISE, resource_kinds
from syncd.store.tables import identities, scim_user_values

from .conftest import Scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def _rows(scim: Scim, id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(the rows stored for user `id`, the rows its stored resource gives), each sorted."""
    values = scim_user_values.c
    with scim.engine.connect() as connection:
        pk, resource = connection.execute(
            select(identities.c.id, identities.c.resource).where(identities.c.external_id == id)
        ).one()
        stored = connection.execute(
            select(values.path, values.item, values.key, values.number).where(values.identity_id == pk)
        ).all()
    expected = [(v.path, v.item, v.key, v.number) for v in index_values(resource, resource_kinds()["User"])]
    return sorted(tuple(row) for row in stored), sorted(expected)


def test_rewrites_keep_exactly_the_indexed_values_of_the_stored_form(scim: Scim) -> None:
    created = scim.post(
        "/Users",
        {
            "schemas": [USER, ENTERPRISE],
            "userName": "ada@example.com",
            "title": "engineer",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@example.com", "type": "work", "primary": True}],
            ENTERPRISE: {"department": "R&D", "costCenter": "42"},
        },
    )
    assert created.status_code == 201, created.text
    id = created.json()["id"]
    path = f"/Users/{id}"
    stored, expected = _rows(scim, id)
    assert stored == expected and len(stored) > 8
    writes = [
        lambda: scim.patch(path, {"op": "replace", "path": "title", "value": "lead"}),
        lambda: scim.patch(path, {"op": "remove", "path": "name.familyName"}),
        lambda: scim.patch(path, {"op": "add", "path": 'emails[type eq "home"].value', "value": "a@home.example"}),
        lambda: scim.patch(path, {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Ops"}),
        lambda: scim.patch(path, {"op": "remove", "path": "title"}),
        lambda: scim.put(
            path, {"schemas": [USER], "userName": "ada@example.com", "name": {"givenName": "Ada"}, "title": "cto"}
        ),
        lambda: scim.patch(path, {"op": "replace", "value": {"displayName": "Ada", "nickName": "al"}}),
    ]
    for write in writes:
        response = write()
        assert response.status_code == 200, response.text
        stored, expected = _rows(scim, id)
        assert stored == expected, response.json()
    assert scim.get("/Users", params={"filter": 'title eq "cto" and nickName eq "al"'}).json()["totalResults"] == 1
    assert scim.get("/Users", params={"filter": 'emails.value eq "a@home.example"'}).json()["totalResults"] == 0
    assert scim.get("/Users", params={"filter": f"{ENTERPRISE}:department pr"}).json()["totalResults"] == 0
