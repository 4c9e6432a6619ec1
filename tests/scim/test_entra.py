"""Entra ID's provisioning sequence, as Microsoft documents and sends it, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from syncd.store.tables import groups, identities, memberships

from .conftest import TOKENS, Scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def entra_user(user_name: str, email: str | None = None) -> dict:
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": email or user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
        ENTERPRISE: {"department": "Research", "manager": {"value": "", "$ref": None}},
    }


def test_entra_connection_test_looks_up_random_ids_and_gets_empty_lists(scim: Scim) -> None:
    entra = scim.as_token(TOKENS["entra"])
    users = entra.get('/Users?filter=userName eq "3e1c6b7e-5b0f-4a39-9a8e-d6bb2b4f6b31"')
    assert users.status_code == 200 and users.json()["totalResults"] == 0 and users.json()["Resources"] == []
    found = entra.get('/Groups?excludedAttributes=members&filter=displayName eq "8f7a9e1b"')
    assert found.status_code == 200 and found.json()["totalResults"] == 0


def test_entra_user_lifecycle(scim: Scim) -> None:
    entra = scim.as_token(TOKENS["entra"])
    created = entra.post("/Users", entra_user("Test_User_ab6490ee@contoso.com"))
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["schemas"] == [USER, ENTERPRISE]
    assert user[ENTERPRISE] == {"department": "Research"}

    for query in (
        'filter=userName eq "test_user_ab6490ee@contoso.com"',
        'filter=externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"',
        'filter=emails[type eq "work"].value eq "Test_User_ab6490ee@contoso.com"',
    ):
        listed = entra.get(f"/Users?{query}").json()
        assert [r["id"] for r in listed["Resources"]] == [user["id"]], query
    # the other provider sees none of it
    assert scim.get('/Users?filter=userName eq "Test_User_ab6490ee@contoso.com"').json()["totalResults"] == 0

    patched = entra.patch(
        f"/Users/{user['id']}",
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updated@contoso.com"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
        {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": "2819c223-7f76-453a-919d-413861904646"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["emails"] == [{"value": "updated@contoso.com", "type": "work", "primary": True}]
    assert body["name"]["familyName"] == "updatedFamilyName"
    assert body[ENTERPRISE]["manager"]["value"] == "2819c223-7f76-453a-919d-413861904646"

    disabled = entra.patch(f"/Users/{user['id']}", {"op": "Replace", "path": "active", "value": "False"})
    assert disabled.status_code == 200 and disabled.json()["active"] is False

    renamed = entra.patch(f"/Users/{user['id']}", {"op": "Replace", "path": "userName", "value": "renamed@contoso.com"})
    assert renamed.json()["userName"] == "renamed@contoso.com"
    assert {"Test_User_ab6490ee@contoso.com", "renamed@contoso.com"} <= scim.writes.all

    assert entra.delete(f"/Users/{user['id']}").status_code == 204
    assert entra.get(f"/Users/{user['id']}").status_code == 404
    with scim.engine.connect() as connection:
        row = connection.execute(select(identities).where(identities.c.external_id == user["id"])).mappings().one()
    assert (row["present"], row["active"], row["source"]) == (False, False, "entra")
    again = entra.post("/Users", entra_user("renamed@contoso.com"))
    assert again.status_code == 201 and again.json()["id"] != user["id"]


def test_entra_add_to_work_email_creates_it(scim: Scim) -> None:
    entra = scim.as_token(TOKENS["entra"])
    body = entra_user("nowork@contoso.com")
    body["emails"] = [{"type": "home", "value": "home@example.org"}]
    user = entra.post("/Users", body).json()
    patched = entra.patch(
        f"/Users/{user['id']}", {"op": "Add", "path": 'emails[type eq "work"].value', "value": "work@contoso.com"}
    )
    assert patched.status_code == 200, patched.text
    assert {"type": "work", "value": "work@contoso.com"} in patched.json()["emails"]
    with scim.engine.connect() as connection:
        email = connection.execute(select(identities.c.email).where(identities.c.external_id == user["id"])).scalar()
    assert email == "work@contoso.com"


def test_entra_group_push_with_microsoft_schema_and_value_list_remove(scim: Scim) -> None:
    entra = scim.as_token(TOKENS["entra"])
    ids = [entra.post("/Users", entra_user(f"u{n}@contoso.com")).json()["id"] for n in range(3)]
    created = entra.post(
        "/Groups",
        {
            "schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Engineering",
            "meta": {"resourceType": "Group"},
            "members": [],
        },
    )
    assert created.status_code == 201, created.text
    group = created.json()
    assert group["schemas"] == [GROUP] and "members" not in group

    lookup = entra.get('/Groups?excludedAttributes=members&filter=displayName eq "Engineering"').json()
    assert lookup["totalResults"] == 1 and "members" not in lookup["Resources"][0]

    added = entra.patch(
        f"/Groups/{group['id']}", {"op": "Add", "path": "members", "value": [{"value": i} for i in ids]}
    )
    assert added.status_code == 200, added.text
    removed = entra.patch(
        f"/Groups/{group['id']}",
        {"op": "Remove", "path": "members", "value": [{"value": ids[0]}, {"value": ids[2]}]},
    )
    assert removed.status_code == 200, removed.text
    assert [m["value"] for m in removed.json()["members"]] == [ids[1]]

    single = entra.get(f"/Groups/{group['id']}?excludedAttributes=members").json()
    assert "members" not in single and single["displayName"] == "Engineering"

    renamed = entra.patch(f"/Groups/{group['id']}", {"op": "Replace", "path": "displayName", "value": "Eng"})
    assert renamed.json()["displayName"] == "Eng"
    with scim.engine.connect() as connection:
        stored = connection.execute(select(groups).where(groups.c.external_id == group["id"])).mappings().one()
        count = connection.execute(select(memberships).where(memberships.c.group_id == stored["id"])).all()
    assert (stored["name"], stored["name_lower"], stored["source"], len(count)) == ("Eng", "eng", "entra", 1)
    assert scim.writes.calls[-1] == {"u1@contoso.com"}  # the rename reconciles the members


def test_entra_member_filter_on_groups(scim: Scim) -> None:
    entra = scim.as_token(TOKENS["entra"])
    uid = entra.post("/Users", entra_user("m@contoso.com")).json()["id"]
    gid = entra.post("/Groups", {"schemas": [GROUP], "displayName": "G", "members": [{"value": uid}]}).json()["id"]
    entra.post("/Groups", {"schemas": [GROUP], "displayName": "Other"})
    found = entra.get(f'/Groups?filter=id eq "{gid}" and members[value eq "{uid}"]&excludedAttributes=members')
    assert found.status_code == 200 and found.json()["totalResults"] == 1
    assert entra.get(f'/Groups?filter=members[value eq "{uid}"]').json()["totalResults"] == 1
