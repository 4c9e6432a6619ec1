"""stored_form (a DEFAULT-context dump) keeps exactly what a response dump of the resource would, relations apart."""

from __future__ import annotations

from typing import Any

import pytest
from scim2_models import Context, Returned

from syncd.scim.resources import stored_form, tolerate, validate_resource
from syncd.scim.schemas import ENTERPRISE, GRANT_EXTENSION, resource_kinds

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
BASE = "https://syncd.example/scim/v2"

FULL_USER: dict[str, Any] = {
    "schemas": [USER, ENTERPRISE],
    "userName": "Ada@Example.com",
    "externalId": "00u1",
    "name": {"formatted": "Ada Lovelace", "givenName": "Ada", "familyName": "Lovelace", "honorificPrefix": "Ms"},
    "displayName": "Ada",
    "nickName": "al",
    "profileUrl": "https://example.com/ada",
    "title": "Engineer",
    "userType": "Employee",
    "preferredLanguage": "en-GB",
    "locale": "en-GB",
    "timezone": "Europe/London",
    "active": "False",
    "password": "not kept",
    "emails": [
        {"value": "ada@example.com", "type": "work", "primary": True},
        {"value": "ada@home.example", "type": "home"},
    ],
    "phoneNumbers": [{"value": "+44 20 0000 0000", "type": "work"}],
    "ims": [{"value": "ada", "type": "xmpp"}],
    "photos": [{"value": "https://example.com/ada.png", "type": "photo"}],
    "addresses": [{"streetAddress": "1 Main St", "locality": "London", "country": "GB", "type": "work"}],
    "entitlements": [{"value": "e1"}],
    "roles": [{"value": "r1", "primary": False}],
    "x509Certificates": [{"value": "TUlJQ0lqQU5CZ2txaGtpRzl3MEJBUUVGQUFPQ0FnOEFNSUlDQ2dLQ0FnRUE="}],
    "groups": [{"value": "g1", "display": "read-only, dropped"}],
    "emptyList": [],
    ENTERPRISE: {
        "employeeNumber": "42",
        "costCenter": "cc",
        "organization": "org",
        "division": "div",
        "department": "R&D",
        "manager": "boss-id",
    },
}
SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("User", FULL_USER),
    ("User", {"schemas": [USER], "userName": "bare"}),
    ("User", {"schemas": [USER, ENTERPRISE], "userName": "x", ENTERPRISE: {}, "emails": [{}], "name": {}}),
    ("User", {"schemas": ["urn:example:unknown", USER], "userName": "y", "urn:example:unknown:thing": 1}),
    (
        "Group",
        {
            "schemas": [GROUP, GRANT_EXTENSION],
            "displayName": "admins",
            "externalId": "g-1",
            "members": [{"value": "u1", "display": "Ada"}],
            GRANT_EXTENSION: {"role": "internal_user", "models": ["a", "b"], "maxBudget": 10, "tpmLimit": 5},
        },
    ),
    ("Group", {"schemas": [GROUP], "displayName": "empty", GRANT_EXTENSION: {}}),
]


@pytest.mark.parametrize(("kind_name", "payload"), SHAPES)
def test_stored_form_is_the_response_dump_without_relations(kind_name: str, payload: dict[str, Any]) -> None:
    kind = resource_kinds()[kind_name]
    resource = validate_resource(kind, tolerate(payload, BASE), Context.RESOURCE_CREATION_REQUEST)
    response = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    for key in ("id", "meta", "groups", "members"):
        response.pop(key, None)
    assert stored_form(kind, resource) == response
    assert "password" not in stored_form(kind, resource)


def test_password_is_the_only_attribute_never_returned() -> None:
    """stored_form's reasoning holds only while no other attribute is returned 'never' or 'request'."""
    password = resource_kinds()["User"].model.model_fields["password"]
    assert Returned.never in password.metadata  # the annotations are where this test looks for them
    for kind in resource_kinds().values():
        for name, field in kind.model.model_fields.items():
            returned = [m for m in field.metadata if isinstance(m, Returned)]
            if name != "password":
                assert not set(returned) & {Returned.never, Returned.request}, (kind.name, name)
        for extension in kind.model.get_extension_models().values():
            for name, field in extension.model_fields.items():
                returned = [m for m in field.metadata if isinstance(m, Returned)]
                assert not set(returned) & {Returned.never, Returned.request}, (kind.name, name)
