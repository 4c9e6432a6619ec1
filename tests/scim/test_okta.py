"""Okta's provisioning sequence, as Okta sends it (its SCIM 2.0 test plan), on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from syncd.store.tables import identities

from .conftest import Scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def okta_user(user_name: str, given: str = "Barbara") -> dict:
    return {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": given, "familyName": "Jensen"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": f"{given} Jensen",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }


def test_okta_user_lifecycle_create_lookup_update_deactivate(scim: Scim) -> None:
    lookup = scim.get('/Users?filter=userName eq "bjensen@example.com"&startIndex=1&count=100')
    assert lookup.status_code == 200 and lookup.json()["totalResults"] == 0

    created = scim.post("/Users", okta_user("bjensen@example.com"))
    assert created.status_code == 201, created.text
    user = created.json()
    assert created.headers["content-type"].startswith("application/scim+json")
    assert "password" not in user and user["active"] is True
    assert user["meta"]["location"] == f"http://testserver/scim/v2/Users/{user['id']}"
    assert created.headers["etag"] == user["meta"]["version"] == 'W/"1"'

    duplicate = scim.post("/Users", okta_user("BJensen@example.com"))
    assert duplicate.status_code == 409
    assert duplicate.json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "409",
        "scimType": "uniqueness",
        "detail": duplicate.json()["detail"],
    }

    found = scim.get('/Users?filter=userName eq "BJENSEN@example.com"&startIndex=1&count=100').json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == user["id"]

    # Okta's PUT carries the whole user, with id, meta and groups
    replaced_body = {**user, "name": {"givenName": "Babs", "familyName": "Jensen"}, "groups": [{"value": "x"}]}
    replaced = scim.put(f"/Users/{user['id']}", replaced_body)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"]["givenName"] == "Babs" and replaced.json()["meta"]["version"] == 'W/"2"'

    deactivated = scim.patch(f"/Users/{user['id']}", {"op": "replace", "value": {"active": False}})
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    with scim.engine.connect() as connection:
        row = connection.execute(select(identities).where(identities.c.external_id == user["id"])).mappings().one()
    assert (row["source"], row["user_id"], row["email"], row["active"], row["present"]) == (
        "okta",
        "bjensen@example.com",
        "bjensen@example.com",
        False,
        True,
    )
    assert scim.writes.all == {"bjensen@example.com"}

    reactivated = scim.patch(f"/Users/{user['id']}", {"op": "replace", "value": {"active": True}})
    assert reactivated.json()["active"] is True


def test_okta_paging_is_stable_with_start_index_and_count(scim: Scim) -> None:
    ids = [scim.post("/Users", okta_user(f"user{n}@example.com")).json()["id"] for n in range(7)]
    seen = []
    for start in (1, 4, 7):
        page = scim.get(f"/Users?startIndex={start}&count=3").json()
        assert page["totalResults"] == 7 and page["startIndex"] == start
        seen += [resource["id"] for resource in page["Resources"]]
    assert seen == ids
    assert scim.get("/Users?startIndex=8&count=3").json()["Resources"] == []
    assert scim.get("/Users?count=0").json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 7,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }


def test_okta_group_push_with_member_add_and_remove(scim: Scim) -> None:
    alice = scim.post("/Users", okta_user("alice@example.com", "Alice")).json()["id"]
    bob = scim.post("/Users", okta_user("bob@example.com", "Bob")).json()["id"]
    carol = scim.post("/Users", okta_user("carol@example.com", "Carol")).json()["id"]
    scim.writes.calls.clear()

    created = scim.post(
        "/Groups",
        {"schemas": [GROUP], "displayName": "llm-users", "members": [{"value": alice, "display": "alice@example.com"}]},
    )
    assert created.status_code == 201, created.text
    group = created.json()
    assert [m["value"] for m in group["members"]] == [alice]
    assert scim.writes.calls == [{"alice@example.com"}]

    lookup = scim.get('/Groups?filter=displayName eq "LLM-Users"&startIndex=1&count=100').json()
    assert lookup["totalResults"] == 1 and lookup["Resources"][0]["id"] == group["id"]

    # remove one member and add two, in one request
    changed = scim.patch(
        f"/Groups/{group['id']}",
        {"op": "remove", "path": f'members[value eq "{alice}"]'},
        {"op": "add", "path": "members", "value": [{"value": bob, "display": "bob"}, {"value": carol}]},
    )
    assert changed.status_code == 200, changed.text
    assert {m["value"] for m in changed.json()["members"]} == {bob, carol}
    assert scim.writes.calls[-1] == {"alice@example.com", "bob@example.com", "carol@example.com"}

    # a path-less replace of members (and the name)
    replaced = scim.patch(
        f"/Groups/{group['id']}",
        {"op": "replace", "value": {"id": group["id"], "displayName": "llm-admins", "members": [{"value": alice}]}},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["displayName"] == "llm-admins"
    assert [m["value"] for m in replaced.json()["members"]] == [alice]

    user = scim.get(f"/Users/{alice}").json()
    assert user["groups"] == [
        {
            "value": group["id"],
            "$ref": f"http://testserver/scim/v2/Groups/{group['id']}",
            "display": "llm-admins",
            "type": "direct",
        }
    ]
    assert scim.delete(f"/Groups/{group['id']}").status_code == 204
    assert scim.get(f"/Groups/{group['id']}").status_code == 404
    assert "groups" not in scim.get(f"/Users/{alice}").json()


def test_okta_bad_token_answers_401_with_a_scim_body(scim: Scim) -> None:
    refused = scim.as_token("not-the-token").get("/Users")
    assert refused.status_code == 401
    assert refused.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert refused.json()["status"] == "401"
    assert refused.headers["www-authenticate"].startswith("Bearer")
