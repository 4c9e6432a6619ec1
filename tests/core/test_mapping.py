"""The mapping's precedence rules (CONTRACT.md), one scenario each, plus order independence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.mapping import FieldOrigin, desired_state, normalise_group_key, rules_from_settings
from syncd.model import ROLES, Group, Identity
from syncd.settings import settings_from_dict


def person(uid: str, source: str = "corp", **kw: object) -> Identity:
    return Identity(source, f"ext-{uid}", uid, kw.pop("email", f"{uid}@example.com"), **kw)  # type: ignore[arg-type]


def group(name: str, *members: str, source: str = "corp", dn: str | None = None, **kw: object) -> Group:
    return Group(source, f"g-{name}", name, dn, frozenset(f"ext-{m}" for m in members), **kw)  # type: ignore[arg-type]


def rules(mappings: list[dict[str, object]], **extra: object) -> object:
    return rules_from_settings(settings_from_dict({"mappings": mappings, **extra}))


def test_a_single_mapping_gives_every_field_with_its_origin() -> None:
    r = rules(
        [
            {
                "group": "llm",
                "role": "proxy_admin_viewer",
                "models": ["gpt-4o"],
                "tpm_limit": 10,
                "rpm_limit": 2,
                "max_budget": 5,
                "budget_duration": "monthly",
                "auto_create_keys": True,
                "teams": ["t1"],
            }
        ]
    )
    state = desired_state([person("alice", display_name="Alice A")], [group("llm", "alice")], r)
    alice = state.users["alice"]
    assert (alice.role, alice.models, alice.tpm_limit, alice.rpm_limit) == ("proxy_admin_viewer", ("gpt-4o",), 10, 2)
    assert (alice.max_budget, alice.budget_duration, alice.auto_create_keys) == (5.0, "monthly", True)
    assert alice.teams == ("t1",) and alice.user_alias == "Alice A" and alice.email == "alice@example.com"
    assert alice.origins["role"] == FieldOrigin("mapping", "llm")
    assert alice.origins["max_budget"] == FieldOrigin("mapping", "llm")


@pytest.mark.parametrize("low", ROLES[1:4])  # team and customer: refused for users when the config loads
def test_the_most_privileged_role_wins(low: str) -> None:
    higher = ROLES[ROLES.index(low) - 1]
    r = rules([{"group": "a", "role": low}, {"group": "b", "role": higher}])
    state = desired_state([person("u")], [group("a", "u"), group("b", "u")], r)
    assert state.users["u"].role == higher
    assert state.users["u"].origins["role"].name == "b"


def test_models_and_teams_are_the_union() -> None:
    r = rules(
        [
            {"group": "a", "models": ["m1", "m2"], "teams": ["t1"]},
            {"group": "b", "models": ["m2", "m3"], "teams": ["t2"]},
        ]
    )
    u = desired_state([person("u")], [group("a", "u"), group("b", "u")], r).users["u"]
    assert u.models == ("m1", "m2", "m3") and u.teams == ("t1", "t2")
    assert u.origins["models"].kind == "union"


def test_limits_and_budget_take_the_largest_and_duration_follows_the_budget() -> None:
    r = rules(
        [
            {"group": "a", "tpm_limit": 100, "rpm_limit": 9, "max_budget": 50, "budget_duration": "weekly"},
            {"group": "b", "tpm_limit": 200, "rpm_limit": 3, "max_budget": 10, "budget_duration": "daily"},
        ]
    )
    u = desired_state([person("u")], [group("a", "u"), group("b", "u")], r).users["u"]
    assert (u.tpm_limit, u.rpm_limit, u.max_budget, u.budget_duration) == (200, 9, 50.0, "weekly")
    assert u.origins["tpm_limit"].name == "b" and u.origins["budget_duration"].name == "a"


def test_auto_create_keys_is_true_if_any_grant_says_so() -> None:
    r = rules([{"group": "a", "auto_create_keys": False}, {"group": "b", "auto_create_keys": True}])
    u = desired_state([person("u")], [group("a", "u"), group("b", "u")], r).users["u"]
    assert u.auto_create_keys is True and u.origins["auto_create_keys"].name == "b"


def test_a_higher_priority_mapping_wins_scalars_outright_but_lists_still_merge() -> None:
    r = rules(
        [
            {"group": "power", "role": "proxy_admin", "max_budget": 1000, "models": ["big"]},
            {
                "group": "contractors",
                "priority": 10,
                "role": "internal_user_viewer",
                "max_budget": 5,
                "budget_duration": "daily",
                "models": ["small"],
            },
        ]
    )
    u = desired_state([person("u")], [group("power", "u"), group("contractors", "u")], r).users["u"]
    assert (u.role, u.max_budget, u.budget_duration) == ("internal_user_viewer", 5.0, "daily")
    assert u.models == ("big", "small")
    assert u.origins["role"].name == "contractors"


def test_defaults_fill_what_no_mapping_gives() -> None:
    r = rules(
        [{"group": "a", "models": ["m"]}],
        defaults={"role": "internal_user_viewer", "max_budget": 1, "budget_duration": "30d", "rpm_limit": 7},
    )
    u = desired_state([person("u")], [group("a", "u")], r).users["u"]
    assert (u.role, u.max_budget, u.budget_duration, u.rpm_limit) == ("internal_user_viewer", 1.0, "30d", 7)
    assert u.origins["role"] == FieldOrigin("default", "defaults")


def test_a_default_duration_never_attaches_to_a_budget_given_without_one() -> None:
    r = rules([{"group": "a", "max_budget": 20}], defaults={"budget_duration": "daily"})
    u = desired_state([person("u")], [group("a", "u")], r).users["u"]
    assert u.max_budget == 20.0 and u.budget_duration is None


def test_yearly_is_translated_for_litellm() -> None:
    r = rules([{"group": "a", "max_budget": 20, "budget_duration": "yearly"}])
    assert desired_state([person("u")], [group("a", "u")], r).users["u"].budget_duration == "365d"


def test_groups_match_by_dn_or_name_case_insensitively() -> None:
    r = rules(
        [
            {"group": "CN=LLM Users, OU=Groups,DC=Example,DC=Org", "role": "proxy_admin_viewer"},
            {"group": "Okta-Admins", "role": "proxy_admin"},
        ]
    )
    groups = [group("llm users", "a", dn="cn=llm users,ou=groups,dc=example,dc=org"), group("okta-admins", "b")]
    state = desired_state([person("a"), person("b")], groups, r)
    assert state.users["a"].role == "proxy_admin_viewer" and state.users["b"].role == "proxy_admin"
    assert normalise_group_key(" CN=x , DC=y ") == "cn=x,dc=y"


def test_people_in_no_mapped_group_are_reported_as_unmapped() -> None:
    state = desired_state([person("u"), person("v")], [group("a", "u"), group("other", "v")], rules([{"group": "a"}]))
    assert set(state.users) == {"u"} and set(state.unmapped) == {"v"}


def test_with_merge_by_email_a_person_in_two_sources_is_one_user_and_the_higher_priority_source_wins() -> None:
    settings = {
        "identity": {"merge_by": "email"},
        "mappings": [
            {"group": "ldap-llm", "models": ["a"], "sources": ["corp"]},
            {"group": "okta-llm", "models": ["b"], "sources": ["okta"]},
        ],
        "ldap": [{"name": "corp", "url": "ldap://x", "priority": 1, "users": {"base_dn": "dc=x"}}],
        "scim": {"tokens": [{"name": "okta", "token": "t0ken", "priority": 5}]},
    }
    r = rules_from_settings(settings_from_dict(settings))
    ldap_person = Identity("corp", "e1", "alice", "Alice@Example.com", "From LDAP")
    okta_person = Identity("okta", "e2", "alice.okta", "alice@example.com", "From Okta")
    groups = [
        Group("corp", "g1", "ldap-llm", None, frozenset({"e1"})),
        Group("okta", "g2", "okta-llm", None, frozenset({"e2"})),
    ]
    state = desired_state([ldap_person, okta_person], groups, r)
    assert list(state.users) == ["alice.okta"]
    u = state.users["alice.okta"]
    assert (u.source, u.user_alias, u.models) == ("okta", "From Okta", ("a", "b"))


def test_two_people_claiming_one_user_id_is_a_problem_not_a_merge() -> None:
    a = Identity("corp", "e1", "same", "one@example.com")
    b = Identity("corp", "e2", "same", "two@example.com")
    state = desired_state(
        [a, b], [group("g", "x"), Group("corp", "g", "g", None, frozenset({"e1", "e2"}))], rules([{"group": "g"}])
    )
    assert list(state.users) == ["same"] and state.users["same"].external_id == "e1"
    assert len(state.problems) == 1 and "user_id 'same' of corp (external id e2) is already held" in state.problems[0]
    assert [(c.kind, c.refused.external_id, c.holder.external_id) for c in state.conflicts] == [("user_id", "e2", "e1")]


def test_personal_overrides_apply_after_the_group_rules() -> None:
    r = rules([{"group": "a", "max_budget": 10, "role": "internal_user"}])
    u = desired_state([person("u", overrides={"max_budget": 500})], [group("a", "u")], r).users["u"]
    assert u.max_budget == 500.0 and u.origins["max_budget"].kind == "override"


def test_a_grant_kept_on_the_group_applies_unless_an_authoritative_mapping_names_it() -> None:
    grant = {"role": "proxy_admin_viewer", "models": ["dir-model"]}
    g = group("dirgroup", "u", grant=grant)
    u = desired_state([person("u")], [g], rules([])).users["u"]
    assert u.role == "proxy_admin_viewer" and u.origins["role"].kind == "group_attribute"
    r = rules([{"group": "dirgroup", "role": "internal_user_viewer", "authoritative": True}])
    u = desired_state([person("u")], [g], r).users["u"]
    assert u.role == "internal_user_viewer" and u.models == ()


@given(st.permutations(["a", "b", "c", "d"]))
def test_the_result_does_not_depend_on_group_order(order: list[str]) -> None:
    r = rules(
        [
            {"group": "a", "role": "internal_user", "models": ["m1"], "max_budget": 10, "budget_duration": "daily"},
            {"group": "b", "role": "proxy_admin_viewer", "tpm_limit": 5, "max_budget": 10, "budget_duration": "weekly"},
            {"group": "c", "models": ["m2"], "auto_create_keys": True, "rpm_limit": 3},
            {"group": "d", "priority": 2, "rpm_limit": 1},
        ]
    )
    groups = [group(name, "u") for name in order]
    u = desired_state([person("u")], groups, r).users["u"]
    assert (u.role, u.models, u.max_budget, u.budget_duration) == ("proxy_admin_viewer", ("m1", "m2"), 10.0, "daily")
    assert (u.tpm_limit, u.rpm_limit, u.auto_create_keys) == (5, 1, True)
