"""What a SCIM request may carry (syncd.scim.door), member PATCHes as set operations, pending members, one Unicode
form for userNames and one email rule, on SQLite and PostgreSQL (the router in-process; tests/reliability/
test_doors.py drives the same through a real `syncd serve`)."""

from __future__ import annotations

import unicodedata

import pytest
from scim2_models import InvalidSyntaxException, InvalidValueException

from syncd.model import email_problem
from syncd.scim.door import MAX_DEPTH, parse_json
from syncd.scim.patch import apply_member_operations, split_member_operations
from syncd.store.scim import Compare, Or, name_key
from syncd.store.scim_filter import merged_terms

from .conftest import Scim

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), InvalidValueException),
        (b"[" * 100_000 + b"]" * 100_000, InvalidValueException),
        (b'{"a": "\\ud800"}', InvalidValueException),
        (b'{"\\u0000": 1}', InvalidValueException),
        (b'{"a": 18446744073709551616}', InvalidValueException),
        (b'{"a": -9223372036854775809}', InvalidValueException),
        (b'{"a": 1e400}', InvalidValueException),
        (b'{"a": NaN}', InvalidValueException),
        (b'{"a": "\xff"}', InvalidSyntaxException),
        (b'{"a": ', InvalidSyntaxException),
    ],
)
def test_the_door_refuses_what_the_store_cannot_hold(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_json(raw)


def test_the_door_lets_ordinary_json_through() -> None:
    assert parse_json(b'{"a": [1, -9223372036854775807, 2.5, "Jos\\u00e9", "\\ud83d\\ude00", null]}') == {
        "a": [1, -(2**63) + 1, 2.5, "José", "😀", None]
    }
    assert parse_json(b"  ") is None
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


def test_member_operations_become_one_set_operation() -> None:
    operations = (
        {"op": "remove", "path": 'members[value eq "a"]'},
        {"op": "add", "path": "members", "value": [{"value": "c", "display": "C"}, {"value": "b"}]},
        {"op": "Remove", "path": "members", "value": [{"value": "b"}]},
        {"op": "replace", "path": "displayName", "value": "x"},
        {"op": "replace", "value": {"members": [{"value": "c"}, {"value": "d"}], "externalId": "e"}},
        {"op": "add", "path": "members", "value": [{"value": "e"}]},
    )
    split = split_member_operations(operations)
    assert split is not None
    members, others = split
    assert [o["path"] if "path" in o else sorted(o["value"]) for o in others] == ["displayName", ["externalId"]]
    after = apply_member_operations({"a": None, "b": "B"}, members)
    assert after == {"c": None, "d": None, "e": None}
    assert apply_member_operations({"a": None}, [("replace", [])]) == {}


@pytest.mark.parametrize(
    "path", ['members[display eq "x"]', "members.display", 'members[value eq "a" or value eq "b"]']
)
def test_a_member_operation_sets_cannot_express_goes_to_the_models(path: str) -> None:
    assert split_member_operations(({"op": "remove", "path": path},)) is None


def test_an_or_of_eq_on_one_path_is_one_in() -> None:
    terms = Or(
        (
            Compare("title", "eq", "a"),
            Compare("title", "eq", "b"),
            Compare("nickname", "eq", "c"),
            Compare("title", "co", "d"),
        )
    )
    merged = merged_terms(terms)
    assert merged == [Compare("title", "in", ("a", "b")), Compare("nickname", "eq", "c"), Compare("title", "co", "d")]


def test_one_unicode_form_and_one_email_rule() -> None:
    nfd = unicodedata.normalize("NFD", "José")
    assert name_key(nfd) == name_key("JOSÉ") == name_key("josé") and name_key("Straße") == name_key("STRASSE")
    for good in ("test.user@okta.local", "Test.User@Okta.LOCAL", "a@localhost", "josé@bücher.de", '"a b"@x.org'):
        assert email_problem(good) is None, good
    for bad in ("plain", "a@", "@x.org", "a b@x.org", "a..b@x.org", "a@-x.org", "a@x..org"):
        assert email_problem(bad) is not None, bad


def test_a_pending_member_joins_when_its_user_arrives_by_external_id_or_user_name(scim: Scim) -> None:
    group = scim.post("/Groups", {"schemas": [GROUP], "displayName": "g"}).json()["id"]
    add = {"op": "add", "path": "members", "value": [{"value": "ext-1"}, {"value": "Late@Example.org"}]}
    assert "members" not in scim.patch(f"/Groups/{group}", add).json()
    by_external = scim.post("/Users", {"schemas": [USER], "userName": "one@example.org", "externalId": "ext-1"})
    by_name = scim.post("/Users", {"schemas": [USER], "userName": "late@example.org"})
    assert by_external.status_code == by_name.status_code == 201
    members = {m["value"] for m in scim.get(f"/Groups/{group}").json()["members"]}
    assert members == {by_external.json()["id"], by_name.json()["id"]}
    assert {g["value"] for g in by_name.json()["groups"]} == {group}
    assert by_name.json()["meta"]["version"] == 'W/"1"'
    assert scim.get(f"/Groups/{group}").json()["meta"]["version"] == 'W/"4"', "each arrival bumps the group's version"


def test_a_pending_member_removed_before_it_arrives_never_joins(scim: Scim) -> None:
    group = scim.post("/Groups", {"schemas": [GROUP], "displayName": "g", "members": [{"value": "ext-2"}]}).json()["id"]
    scim.patch(f"/Groups/{group}", {"op": "remove", "path": 'members[value eq "ext-2"]'})
    scim.post("/Users", {"schemas": [USER], "userName": "two@example.org", "externalId": "ext-2"})
    assert "members" not in scim.get(f"/Groups/{group}").json()


def test_a_2000_operation_patch_removes_exactly_those_members(scim: Scim) -> None:
    ids = [scim.post("/Users", {"schemas": [USER], "userName": f"m{i}@example.org"}).json()["id"] for i in range(60)]
    group = scim.post("/Groups", {"schemas": [GROUP], "displayName": "big", "members": [{"value": i} for i in ids]})
    operations = [{"op": "remove", "path": f'members[value eq "{i}"]'} for i in ids[:40]] * 50
    answer = scim.patch(f"/Groups/{group.json()['id']}", *operations)
    assert answer.status_code == 200 and {m["value"] for m in answer.json()["members"]} == set(ids[40:])


def test_a_pending_member_joins_when_a_user_takes_its_external_id(scim: Scim) -> None:
    group = scim.post("/Groups", {"schemas": [GROUP], "displayName": "g", "members": [{"value": "ext-3"}]}).json()["id"]
    user = scim.post("/Users", {"schemas": [USER], "userName": "three@example.org"}).json()["id"]
    assert "members" not in scim.get(f"/Groups/{group}").json()
    answer = scim.patch(f"/Users/{user}", {"op": "replace", "path": "externalId", "value": "ext-3"})
    assert [g["value"] for g in answer.json()["groups"]] == [group]
    assert [m["value"] for m in scim.get(f"/Groups/{group}").json()["members"]] == [user]
