"""Filters to SQL: a table of filters and the rows they must return, errors, sorting, and an oracle.

The oracle is scim2-models' own in-memory evaluator (`ScimFilter.match`): every generated filter must select the
same users through SQL as through it, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import itertools
from urllib.parse import quote

import pytest
from scim2_models import EnterpriseUser, ScimFilter, User

from .conftest import Scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

PEOPLE = [
    {
        "userName": "alice@example.com",
        "displayName": "Alice Liddell",
        "title": "y",
        "active": True,
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [
            {"value": "alice@example.com", "type": "work", "primary": True},
            {"value": "alice@home.org", "type": "home"},
        ],
        "externalId": "EXT-1",
        ENTERPRISE: {"department": "Research", "employeeNumber": "100"},
    },
    {
        "userName": "Bob@Example.com",
        "displayName": "Bob Builder",
        "title": "Engineer",
        "active": False,
        "name": {"givenName": "Bob", "familyName": "Builder"},
        "emails": [{"value": "bob@home.org", "type": "home"}],
        "externalId": "ext-2",
        "userType": "Contractor",
        ENTERPRISE: {"department": "Ops"},
    },
    {
        "userName": "carol",
        "displayName": "Carol Danvers",
        "active": True,
        "emails": [{"value": "carol@example.com", "type": "work"}],
        "nickName": "Captain_50%",
    },
    {
        "userName": "dave@example.com",
        "title": "Y",
        "active": True,
        "name": {"familyName": "Dave"},
        "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
    },
]

TABLE = [
    ('userName eq "ALICE@example.com"', {"alice@example.com"}),
    ('userName ne "alice@example.com"', {"Bob@Example.com", "carol", "dave@example.com"}),
    ('userName sw "b"', {"Bob@Example.com"}),
    ('userName ew "EXAMPLE.COM"', {"alice@example.com", "Bob@Example.com", "dave@example.com"}),
    ('userName co "ar"', {"carol"}),
    ('userName gt "c"', {"carol", "dave@example.com"}),
    ('userName le "bob@example.com"', {"alice@example.com", "Bob@Example.com"}),
    ('title eq "y"', {"alice@example.com", "dave@example.com"}),
    ('not (title eq "y")', {"Bob@Example.com", "carol"}),
    ("title pr", {"alice@example.com", "Bob@Example.com", "dave@example.com"}),
    ("not (title pr)", {"carol"}),
    ('title ne "y"', {"Bob@Example.com", "carol"}),
    ("active eq false", {"Bob@Example.com"}),
    ("active eq true and title pr", {"alice@example.com", "dave@example.com"}),
    ('externalId eq "ext-1"', set()),  # externalId is caseExact
    ('externalId eq "EXT-1"', {"alice@example.com"}),
    ('emails[type eq "work"].value eq "carol@example.com"', {"carol"}),
    ('emails[type eq "work" and value co "alice"]', {"alice@example.com"}),
    ('emails[type eq "home" and value co "alice"]', {"alice@example.com"}),
    ('emails[type eq "work" and value co "home"]', set()),
    ('emails co "home.org"', {"alice@example.com", "Bob@Example.com"}),
    ('emails.type eq "work"', {"alice@example.com", "carol"}),
    ('emails.type ne "work"', {"Bob@Example.com", "dave@example.com"}),
    ("emails pr", {"alice@example.com", "Bob@Example.com", "carol"}),
    ('emails[not (type eq "work")]', {"alice@example.com", "Bob@Example.com"}),
    ('name.familyName sw "li"', {"alice@example.com"}),
    ("name pr", {"alice@example.com", "Bob@Example.com", "dave@example.com"}),
    ('nickName co "_50%"', {"carol"}),
    ('nickName co "n_5"', {"carol"}),
    ('nickName co "x%"', set()),
    (f'{ENTERPRISE}:department eq "research"', {"alice@example.com"}),
    (f"{ENTERPRISE}:employeeNumber pr", {"alice@example.com"}),
    ('userType eq "contractor" or displayName sw "carol"', {"Bob@Example.com", "carol"}),
    ('(title eq "y" or title eq "engineer") and not (active eq false)', {"alice@example.com", "dave@example.com"}),
    ('phoneNumbers[type eq "work" and value sw "+1"]', {"dave@example.com"}),
    ("title eq null", {"carol"}),
    ("title ne null", {"alice@example.com", "Bob@Example.com", "dave@example.com"}),
    ('meta.created gt "2000-01-01T00:00:00Z"', {"alice@example.com", "Bob@Example.com", "carol", "dave@example.com"}),
    ('meta.lastModified lt "2000-01-01T00:00:00Z"', set()),
    ('id eq "no-such-id"', set()),
    ("groups pr", set()),
]


@pytest.fixture
def people(scim: Scim) -> Scim:
    for person in PEOPLE:
        created = scim.post("/Users", {"schemas": [USER, ENTERPRISE], **person})
        assert created.status_code == 201, created.text
    return scim


def names(scim: Scim, filter: str, **params: str) -> set[str]:
    extra = "".join(f"&{key}={quote(value)}" for key, value in params.items())
    answer = scim.get(f"/Users?filter={quote(filter)}{extra}")
    assert answer.status_code == 200, (filter, answer.text)
    return {resource["userName"] for resource in answer.json()["Resources"]}


def test_filter_table_selects_exactly_the_expected_rows(people: Scim) -> None:
    wrong = {f: (names(people, f), want) for f, want in TABLE if names(people, f) != want}
    assert not wrong


@pytest.mark.parametrize(
    "bad",
    [
        'foo eq "x"',
        'not (nosuch eq "y")',
        'userName eq "x" or nosuch pr',
        "userName eq",
        'userName eq "x" or',
        "active gt true",
        "userName eq 5",
        'emails[nosuch eq "x"]',
        'x509Certificates.value eq "x"',
        'meta.location eq "x"',
        'password eq "x"',
        'name eq "x"',
        'userName[value eq "x"]',
        'meta.created gt "not a date"',
    ],
)
def test_unmappable_or_malformed_filters_are_invalid_filter(scim_sqlite: Scim, bad: str) -> None:
    answer = scim_sqlite.get(f"/Users?filter={quote(bad)}")
    assert answer.status_code == 400, (bad, answer.text)
    assert answer.json()["scimType"] == "invalidFilter"


def test_group_filters(scim_sqlite: Scim) -> None:
    scim = scim_sqlite
    uid = scim.post("/Users", {"schemas": [USER], "userName": "m", "displayName": "Member One"}).json()["id"]
    scim.post("/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "With"})
    gid = scim.post(
        "/Groups",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Has", "members": [{"value": uid}]},
    ).json()["id"]
    for text, want in [
        ('members[display co "one"]', {gid}),
        ("members pr", {gid}),
        ("not (members pr)", {"With"}),
        ('displayName sw "w"', {"With"}),
    ]:
        found = {r["id"] if r["displayName"] == "Has" else r["displayName"] for r in _groups(scim, text)}
        assert found == want, text
    assert scim.get(f"/Groups?filter={quote('members.$ref pr')}").json()["scimType"] == "invalidFilter"
    assert scim.get(f"/Groups?filter={quote('title eq 1')}").json()["scimType"] == "invalidFilter"


def _groups(scim: Scim, text: str) -> list[dict]:
    answer = scim.get(f"/Groups?filter={quote(text)}")
    assert answer.status_code == 200, answer.text
    return answer.json()["Resources"]


def test_sort_by_and_sort_order(people: Scim) -> None:
    def order(**params: str) -> list[str]:
        query = "&".join(f"{key}={quote(value)}" for key, value in params.items())
        return [r["userName"] for r in people.get(f"/Users?{query}").json()["Resources"]]

    assert order(sortBy="userName") == ["alice@example.com", "Bob@Example.com", "carol", "dave@example.com"]
    assert order(sortBy="userName", sortOrder="descending")[0] == "dave@example.com"
    assert order(sortBy="title") == ["Bob@Example.com", "alice@example.com", "dave@example.com", "carol"]
    assert order(sortBy="name.familyName", count="2") == ["Bob@Example.com", "dave@example.com"]
    assert order(sortBy="emails")[:2] == ["alice@example.com", "Bob@Example.com"]
    assert people.get("/Users?sortBy=nosuch").json()["scimType"] == "invalidFilter"
    assert people.get("/Users?sortOrder=sideways").json()["scimType"] == "invalidValue"


def test_attributes_and_excluded_attributes(people: Scim) -> None:
    listed = people.get('/Users?filter=userName eq "alice@example.com"&attributes=userName,emails.value').json()
    assert listed["Resources"][0] == {
        "schemas": [USER, ENTERPRISE],
        "id": listed["Resources"][0]["id"],
        "userName": "alice@example.com",
        "emails": [{"value": "alice@example.com"}, {"value": "alice@home.org"}],
    }
    uid = listed["Resources"][0]["id"]
    one = people.get(f"/Users/{uid}?attributes={ENTERPRISE}:department,name.givenName").json()
    assert one[ENTERPRISE] == {"department": "Research"} and one["name"] == {"givenName": "Alice"}
    trimmed = people.get(f"/Users/{uid}?excludedAttributes=emails,name.familyName,meta,{ENTERPRISE}").json()
    assert "emails" not in trimmed and "meta" not in trimmed and ENTERPRISE not in trimmed
    assert trimmed["name"] == {"givenName": "Alice"} and trimmed["id"] == uid


def _atoms() -> list[str]:
    values = {
        "userName": ['"alice@example.com"', '"bob@example.com"', '"c"', '"example"'],
        "title": ['"y"', '"engineer"', '"Y"'],
        "emails.type": ['"work"', '"home"'],
        "emails.value": ['"carol@example.com"', '"alice@home.org"'],
        "name.familyName": ['"Liddell"', '"d"'],
        "displayName": ['"Bob Builder"', '"ca"'],
        f"{ENTERPRISE}:department": ['"research"', '"ops"'],
    }
    atoms = []
    for attribute, options in values.items():
        for op, value in itertools.product(("eq", "ne", "co", "sw", "ew", "gt", "le"), options):
            if attribute == "emails.value" and op in ("gt", "le"):
                continue
            atoms.append(f"{attribute} {op} {value}")
        atoms.append(f"{attribute} pr")
    atoms += ["active eq true", "active ne false", 'emails[type eq "work" and value ew ".com"]', "name pr"]
    return atoms


def test_sql_agrees_with_the_scim2_models_evaluator(people: Scim) -> None:
    model = User[EnterpriseUser]
    everyone = [model.model_validate(r) for r in people.get("/Users").json()["Resources"]]
    atoms = _atoms()
    filters = atoms + [f"not ({a})" for a in atoms[::3]]
    filters += [f"{a} and {b}" for a, b in zip(atoms[::2], atoms[1::2], strict=False)]
    filters += [f"({a} or {b}) and not ({c})" for a, b, c in zip(atoms, atoms[5:], atoms[11:], strict=False)][::4]
    disagreements = {}
    for text in filters:
        expected = {u.user_name for u in everyone if ScimFilter[model](text).match(u)}
        got = names(people, text)
        if got != expected:
            disagreements[text] = (got, expected)
    assert not disagreements
    assert len(filters) > 150
