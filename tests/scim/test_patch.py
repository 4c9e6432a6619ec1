"""PATCH shapes: every form Okta and Entra ID send, and the errors of the others."""

from __future__ import annotations

import pytest

from .conftest import Scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def user(scim_sqlite: Scim) -> str:
    body = {
        "schemas": [USER],
        "userName": "pat@example.com",
        "displayName": "Pat",
        "emails": [{"value": "pat@example.com", "type": "work", "primary": True}],
        "phoneNumbers": [{"value": "1", "type": "work"}, {"value": "2", "type": "mobile"}],
        "active": True,
    }
    return str(scim_sqlite.post("/Users", body).json()["id"])


@pytest.mark.parametrize(
    ("operations", "check"),
    [
        ([{"op": "Replace", "path": "active", "value": "False"}], lambda u: u["active"] is False),
        ([{"op": "REPLACE", "path": "active", "value": "true"}], lambda u: u["active"] is True),
        ([{"op": "replace", "value": {"active": "False", "displayName": "P"}}], lambda u: u["displayName"] == "P"),
        (
            [{"op": "add", "value": {"title": "Boss", "name.givenName": "Pat"}}],
            lambda u: u["name"]["givenName"] == "Pat",
        ),
        ([{"op": "add", "path": "nickName", "value": "pp"}], lambda u: u["nickName"] == "pp"),
        ([{"op": "remove", "path": "displayName"}], lambda u: "displayName" not in u),
        ([{"op": "remove", "path": 'phoneNumbers[type eq "mobile"]'}], lambda u: len(u["phoneNumbers"]) == 1),
        ([{"op": "Remove", "path": "phoneNumbers", "value": [{"value": "1"}]}], lambda u: len(u["phoneNumbers"]) == 1),
        (
            [{"op": "replace", "path": 'phoneNumbers[type eq "work"].value', "value": "9"}],
            lambda u: {"value": "9", "type": "work"} in u["phoneNumbers"],
        ),
        (
            [{"op": "Add", "path": 'emails[type eq "home"].value', "value": "h@example.org"}],
            lambda u: {"value": "h@example.org", "type": "home"} in u["emails"],
        ),
        (
            [{"op": "add", "path": f"{ENTERPRISE}:department", "value": "R&D"}],
            lambda u: u[ENTERPRISE]["department"] == "R&D",
        ),
        (
            [{"op": "add", "path": f"{ENTERPRISE}:manager", "value": {"value": "boss"}}],
            lambda u: u[ENTERPRISE]["manager"]["value"] == "boss",
        ),
        ([{"op": "replace", "path": "roles", "value": []}], lambda u: "roles" not in u),
        ([{"op": "add", "path": "unknownAttribute", "value": "x"}], lambda u: "unknownAttribute" not in u),
        (
            [{"op": "replace", "value": {"id": "other", "meta": {"x": 1}, "schemas": [USER], "title": "T"}}],
            lambda u: u["title"] == "T",
        ),
    ],
)
def test_patch_shapes_answer_200_with_the_resource(
    scim_sqlite: Scim, user: str, operations: list, check: object
) -> None:
    answer = scim_sqlite.patch(f"/Users/{user}", *operations)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == user
    assert check(answer.json())  # type: ignore[operator]
    assert scim_sqlite.get(f"/Users/{user}").json() == answer.json()


@pytest.mark.parametrize(
    ("operations", "scim_type"),
    [
        ([{"op": "frobnicate", "path": "title", "value": "x"}], "invalidValue"),
        ([{"op": "remove"}], "noTarget"),
        ([{"op": "add", "path": "title"}], "invalidValue"),
        ([{"op": "replace", "path": 'phoneNumbers[type eq "fax" and value co "x"].value', "value": "1"}], "noTarget"),
        ([{"op": "replace", "path": "id", "value": "x"}], "mutability"),
        ([{"op": "replace", "path": "userName"}], "invalidValue"),
        ([{"op": "replace", "path": "emails[type eq", "value": "x"}], "invalidPath"),
        ([{"op": "replace", "path": "active", "value": "maybe"}], "invalidValue"),
        ([], "invalidValue"),
    ],
)
def test_bad_patches_are_scim_errors_and_change_nothing(
    scim_sqlite: Scim, user: str, operations: list, scim_type: str
) -> None:
    before = scim_sqlite.get(f"/Users/{user}").json()
    answer = scim_sqlite.patch(f"/Users/{user}", *operations)
    assert answer.status_code == 400, answer.text
    assert answer.json()["scimType"] == scim_type, answer.text
    assert scim_sqlite.get(f"/Users/{user}").json() == before


def test_patch_that_changes_nothing_keeps_the_version(scim_sqlite: Scim, user: str) -> None:
    answer = scim_sqlite.patch(f"/Users/{user}", {"op": "replace", "path": "displayName", "value": "Pat"})
    assert answer.json()["meta"]["version"] == 'W/"1"'
    assert scim_sqlite.writes.calls == [{"pat@example.com"}]


def test_group_members_are_users_of_the_same_provider_or_pending(scim_sqlite: Scim, user: str) -> None:
    group = scim_sqlite.post("/Groups", {"schemas": [GROUP], "displayName": "g"}).json()["id"]
    unknown = scim_sqlite.patch(f"/Groups/{group}", {"op": "add", "path": "members", "value": [{"value": "nope"}]})
    assert unknown.status_code == 200 and "members" not in unknown.json(), "a member not (yet) a user is pending"
    other = scim_sqlite.as_token("entra-token-2")
    assert (
        other.patch(f"/Groups/{group}", {"op": "add", "path": "members", "value": [{"value": user}]}).status_code == 404
    )
    added = scim_sqlite.patch(f"/Groups/{group}", {"op": "add", "path": "members", "value": [{"value": user}]})
    again = scim_sqlite.patch(f"/Groups/{group}", {"op": "add", "path": "members", "value": [{"value": user}]})
    assert added.status_code == again.status_code == 200
    assert [m["value"] for m in again.json()["members"]] == [user]
    emptied = scim_sqlite.patch(f"/Groups/{group}", {"op": "remove", "path": "members"})
    assert "members" not in emptied.json()


def test_put_group_replaces_members(scim_sqlite: Scim, user: str) -> None:
    group = scim_sqlite.post(
        "/Groups", {"schemas": [GROUP], "displayName": "g", "members": [{"value": user, "display": "Pat P"}]}
    ).json()
    assert group["members"][0]["display"] == "Pat P"
    replaced = scim_sqlite.put(f"/Groups/{group['id']}", {**group, "displayName": "h", "members": []})
    assert replaced.status_code == 200 and "members" not in replaced.json()
    assert replaced.json()["displayName"] == "h"


PLAIN = [
    [{"op": "replace", "path": "active", "value": "False"}],
    [{"op": "Replace", "path": "active", "value": True}],
    [{"op": "replace", "value": {"active": False, "title": "T", "displayName": "D"}}],
    [{"op": "add", "path": "nickName", "value": "nick"}, {"op": "remove", "path": "title"}],
    [{"op": "remove", "path": "displayName"}],
    [{"op": "remove", "path": "nickName"}],
    [{"op": "add", "path": f"{ENTERPRISE}:department", "value": "R&D"}],
    [{"op": "replace", "path": "userName", "value": "Other@Example.com"}],
    [{"op": "replace", "path": f"{USER}:title", "value": "core-qualified"}],
    [{"op": "replace", "value": {"id": "x", "schemas": [USER], "externalId": "e-9", "profileUrl": "https://x"}}],
]


@pytest.mark.parametrize("operations", PLAIN)
def test_plain_patches_match_scim2_models(operations: list) -> None:
    from syncd.scim.patch import apply_to_model, apply_to_stored, parse_patch
    from syncd.scim.resources import stored_form
    from syncd.scim.schemas import resource_kinds

    kind = resource_kinds()["User"]
    stored = {
        "schemas": [USER],
        "userName": "pat@example.com",
        "displayName": "Pat",
        "title": "Boss",
        "active": True,
        "emails": [{"value": "pat@example.com", "type": "work"}],
    }
    patch = parse_patch(kind, {"Operations": operations}, "http://x/scim/v2")
    assert patch.simple is not None
    fast = apply_to_stored(kind, patch, stored)
    model = apply_to_model(kind, patch, {**stored, "id": "u1"})
    slow = None if model is None else stored_form(kind, model)
    assert (fast or stored) == (slow if slow is not None else stored)


def test_on_write_is_told_after_the_write_is_committed(scim: Scim) -> None:
    from sqlalchemy import create_engine, select

    from syncd.store.tables import identities

    user = scim.post("/Users", {"schemas": [USER], "userName": "seen@example.com", "title": "before"}).json()
    other = create_engine(scim.engine.url)  # another connection: sees only what is committed
    titles: list[str] = []

    def look(_user_ids: set[str]) -> None:
        with other.connect() as connection:
            resource = connection.execute(
                select(identities.c.resource).where(identities.c.external_id == user["id"])
            ).scalar_one()
        titles.append(resource.get("title"))

    scim.writes.watch = look
    try:
        for title in ("patched", "patched again"):
            assert (
                scim.patch(f"/Users/{user['id']}", {"op": "replace", "path": "title", "value": title}).status_code
                == 200
            )
        replaced = {"schemas": [USER], "userName": "seen@example.com", "title": "put"}
        assert scim.put(f"/Users/{user['id']}", replaced).status_code == 200
    finally:
        scim.writes.watch = None
        other.dispose()
    assert titles == ["patched", "patched again", "put"]
