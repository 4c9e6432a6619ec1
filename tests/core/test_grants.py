"""Grants kept in the directory: parsing, validation with named problems, and the proxy_admin fence."""

from __future__ import annotations

import pytest

from syncd.grants import admin_allowed, parse_grant, parse_grant_json

ATTRS = {
    "role": "litellmRole",
    "models": "litellmModels",
    "max_budget": "litellmMaxBudget",
    "budget_duration": "litellmBudgetDuration",
    "auto_create_keys": "litellmAutoCreateKeys",
    "tpm_limit": "litellmTpmLimit",
    "teams": "litellmTeams",
}
DN = "cn=ml,ou=groups,dc=example,dc=org"


def test_one_attribute_per_field() -> None:
    raw = {
        "litellmRole": ["proxy_admin_viewer"],
        "LITELLMMODELS": ["gpt-4o", "claude,gpt-4o"],
        "litellmMaxBudget": ["12.5"],
        "litellmBudgetDuration": ["yearly"],
        "litellmAutoCreateKeys": ["TRUE"],
        "litellmTpmLimit": ["1000"],
        "litellmTeams": ["ml"],
    }
    result = parse_grant(DN, raw, ATTRS)
    assert result.warnings == []
    assert result.grant == {
        "role": "proxy_admin_viewer",
        "models": ("claude", "gpt-4o"),
        "max_budget": 12.5,
        "budget_duration": "365d",
        "auto_create_keys": True,
        "tpm_limit": 1000,
        "teams": ("ml",),
    }


def test_a_whole_grant_as_json_in_one_attribute() -> None:
    raw = {
        "description": [
            "Machine learning team",
            'litellm:{"role": "internal_user", "models": ["gpt-4o"], "max_budget": 50, '
            '"budget_duration": "monthly", "priority": 3}',
        ]
    }
    result = parse_grant(DN, raw, {}, "description")
    assert result.grant == {
        "role": "internal_user",
        "models": ("gpt-4o",),
        "max_budget": 50.0,
        "budget_duration": "monthly",
        "priority": 3,
    }


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"litellmRole": ["superuser"]}, "attribute litellmRole (role): 'superuser' is not a LiteLLM role"),
        ({"litellmMaxBudget": ["lots"]}, "attribute litellmMaxBudget (max_budget): 'lots' is not a number"),
        (
            {"litellmBudgetDuration": ["yearly2"]},
            "attribute litellmBudgetDuration (budget_duration): 'yearly2' is not a",
        ),
        ({"litellmTpmLimit": ["1", "2"]}, "attribute litellmTpmLimit (tpm_limit): expected one value, got 2"),
        ({"litellmAutoCreateKeys": ["maybe"]}, "'maybe' is not true or false"),
    ],
)
def test_a_malformed_attribute_refuses_the_grant_naming_dn_attribute_and_problem(
    raw: dict[str, list[str]], problem: str
) -> None:
    result = parse_grant(DN, raw, ATTRS)
    assert result.grant == {} and result.refused
    assert result.warnings[0].startswith(f"{DN}: ") and problem in result.warnings[0]
    assert result.warnings[0].endswith("grant ignored")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("litellm:{broken", "broken JSON"),
        ("litellm:[1, 2]", "must be a JSON object"),
        ('litellm:{"role": "boss"}', "role: 'boss' is not a LiteLLM role"),
        ('litellm:{"role": "customer"}', "role: LiteLLM refuses the role 'customer' for users (422)"),
        ('litellm:{"role": "team"}', "role: LiteLLM refuses the role 'team' for users (422)"),
        ('litellm:{"budget_duration": "600000w"}', "'600000w' is longer than LiteLLM can store"),
        ('litellm:{"max_budget": "x"}', "max_budget: 'x' is not a number"),
        ('litellm:{"colour": "red"}', "'colour' is not a grant field"),
    ],
)
def test_a_malformed_json_grant_is_refused(value: str, problem: str) -> None:
    result = parse_grant_json(DN, "description", [value])
    assert result.grant == {} and problem in result.warnings[0] and "attribute description" in result.warnings[0]


def test_values_without_the_prefix_are_not_grants() -> None:
    assert parse_grant_json(DN, "description", ["just a description"]).grant == {}
    assert parse_grant_json(DN, "description", ["just a description"]).warnings == []


def test_only_allowed_bases_may_grant_proxy_admin() -> None:
    assert admin_allowed(DN, [])
    assert admin_allowed(DN, ["ou=groups, dc=example,dc=org"])
    assert admin_allowed("CN=ML,OU=Groups,DC=example,DC=org", ["ou=groups,dc=example,dc=org"])
    assert not admin_allowed("cn=ml,ou=self-service,dc=example,dc=org", ["ou=groups,dc=example,dc=org"])
    assert not admin_allowed("cn=evil-ou=groups,dc=example,dc=org", ["ou=groups,dc=example,dc=org"])
    assert not admin_allowed(None, ["ou=groups,dc=example,dc=org"])
