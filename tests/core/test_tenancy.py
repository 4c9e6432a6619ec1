"""Tenant isolation in the mapping (issue 14): which sources a mapping matches, who owns a person, email conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.mapping import MappingRules, desired_state, identify_people, is_dn, rules_from_settings
from syncd.model import Group, Identity, ManagedUser
from syncd.plan import PlanPolicy, make_plan
from syncd.settings import ConfigError, settings_from_dict

ADMINS_DN = "cn=llm-admins,ou=groups,dc=example,dc=org"
#: a mapping of the groups named eng in every source of `config` (a name needs `sources:` there)
ENG = {"group": "eng", "sources": ["corp", "okta", "evil"]}


def config(mappings: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Sources corp (LDAP) and the SCIM tokens okta and evil."""
    return {
        "ldap": [{"name": "corp", "url": "ldap://127.0.0.1", "users": {"base_dn": "dc=example,dc=org"}}],
        "scim": {"tokens": [{"name": "okta", "token": "okta-token"}, {"name": "evil", "token": "evil-token"}]},
        "mappings": mappings,
        **extra,
    }


def rules(mappings: list[dict[str, Any]], **extra: Any) -> MappingRules:
    return rules_from_settings(settings_from_dict(config(mappings, **extra)))


def who(
    source: str, uid: str, *, email: str | None = None, recorded: int | None = None, active: bool = True
) -> Identity:
    mail = f"{uid}@example.org" if email is None else email
    return Identity(source, f"{source}-{uid}", uid, mail, None, active, recorded=recorded)


def ldap_group(cn: str, *members: Identity) -> Group:
    dn = f"cn={cn},ou=groups,dc=example,dc=org"
    return Group("corp", f"g-{cn}", cn, dn, frozenset(m.external_id for m in members))


def scim_group(source: str, name: str, *members: Identity) -> Group:
    return Group(source, f"{source}-g-{name}", name, None, frozenset(m.external_id for m in members))


# -- which groups a mapping matches --------------------------------------------------------------------------------
def test_a_scim_group_named_after_an_ldap_dn_grants_nothing() -> None:
    r = rules([{"group": ADMINS_DN, "role": "proxy_admin"}])
    alice, mallory = who("corp", "alice", recorded=1), who("evil", "mallory", recorded=2)
    groups = [ldap_group("llm-admins", alice), scim_group("evil", ADMINS_DN.upper(), mallory)]
    state = desired_state([alice, mallory], groups, r)
    assert state.users["alice"].role == "proxy_admin"
    assert "mallory" not in state.users and "mallory" in state.unmapped


def test_a_dn_mapping_matches_a_scim_displayname_only_where_it_names_that_scim_source() -> None:
    mallory, olga = who("evil", "mallory"), who("okta", "olga")
    groups = [scim_group("evil", ADMINS_DN, mallory), scim_group("okta", ADMINS_DN, olga)]
    state = desired_state([mallory, olga], groups, rules([{"group": ADMINS_DN, "sources": ["okta"]}]))
    assert set(state.users) == {"olga"} and set(state.unmapped) == {"mallory"}


def test_a_scim_group_named_after_a_team_admin_dn_makes_nobody_team_admin() -> None:
    from syncd.plan import plan_teams

    r = rules([{"group": "llm-users", "teams": ["platform"], "sources": ["corp", "evil"]}])
    alice, mallory = who("corp", "alice", recorded=1), who("evil", "mallory", recorded=2)
    groups = [
        ldap_group("llm-users", alice),
        ldap_group("llm-admins", alice),
        scim_group("evil", "llm-users", mallory),
        scim_group("evil", ADMINS_DN, mallory),
    ]
    state = desired_state([alice, mallory], groups, r)
    assert ADMINS_DN in state.users["alice"].groups
    assert f"{ADMINS_DN} (SCIM group of evil)" in state.users["mallory"].groups
    spec = {"alias": "platform", "admin_groups": [ADMINS_DN]}
    teams = settings_from_dict(config([{"group": "llm-users", "sources": ["corp"]}], teams=[spec])).teams
    result = plan_teams(state.users, teams, [], {}, dict.fromkeys(state.users, "active"))
    roles = {c.user_id: c.role for c in result.teams if c.action == "add_member"}
    assert roles == {"alice": "admin", "mallory": "user"}


def test_a_name_matches_the_cn_and_displayname_of_the_sources_it_names() -> None:
    alice, olga, mallory = who("corp", "alice"), who("okta", "olga"), who("evil", "mallory")
    groups = [ldap_group("eng", alice), scim_group("okta", "ENG", olga), scim_group("evil", "eng", mallory)]
    everyone = [alice, olga, mallory]
    assert set(desired_state(everyone, groups, rules([ENG])).users) == {"alice", "olga", "mallory"}
    only_corp = desired_state(everyone, groups, rules([{"group": "eng", "sources": ["corp"]}]))
    assert set(only_corp.users) == {"alice"}
    both = desired_state(everyone, groups, rules([{"group": "eng", "sources": ["corp", "okta"]}]))
    assert set(both.users) == {"alice", "olga"}


def test_a_name_without_sources_that_a_tenant_could_also_carry_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as refused:
        rules([{"group": "eng"}, {"group": ADMINS_DN}, {"group": "llm-admins", "role": "proxy_admin"}])
    assert refused.value.problems == [
        f"mappings[{i}].group: {name!r} is a group name, not a DN, and a group of that name may come from corp (LDAP), "
        "okta (SCIM) and evil (SCIM): say which with `sources:` (e.g. sources: [corp]), or map the LDAP group by "
        "its DN"
        for i, name in ((0, "eng"), (2, "llm-admins"))
    ]
    one_token = {"scim": {"tokens": [{"name": "okta", "token": "t"}]}}
    two_tokens = {"scim": {"tokens": [{"name": "okta", "token": "t"}, {"name": "evil", "token": "e"}]}}
    with pytest.raises(ConfigError, match=r"come from okta \(SCIM\) and evil \(SCIM\)"):
        settings_from_dict({**two_tokens, "mappings": [{"group": "eng"}]})
    # unambiguous without sources: a single token, or directories only (no tenant can create groups there)
    alone = rules_from_settings(settings_from_dict({**one_token, "mappings": [{"group": "eng"}]}))
    olga = who("okta", "olga")
    assert set(desired_state([olga], [scim_group("okta", "ENG", olga)], alone).users) == {"olga"}
    two_directories = config([{"group": "eng"}])
    two_directories["ldap"].append({"name": "emea", "url": "ldap://127.0.0.1", "users": {"base_dn": "o=emea"}})
    del two_directories["scim"]
    directories = rules_from_settings(settings_from_dict(two_directories))
    alice = who("corp", "alice")
    assert set(desired_state([alice], [ldap_group("eng", alice)], directories).users) == {"alice"}


def test_check_config_says_what_each_mapping_matches() -> None:
    from syncd.checks import _mapping_scopes

    mappings = [
        {"group": ADMINS_DN},
        {"group": "eng", "sources": ["corp"]},
        {"group": "Eng", "sources": ["okta", "corp", "evil"]},
        {"group": ADMINS_DN, "sources": ["evil"]},
    ]
    lines = [(r.what, r.ok, r.detail) for r in _mapping_scopes(settings_from_dict(config(mappings)))]
    assert lines == [
        (
            f"mappings[0] ({ADMINS_DN})",
            True,
            "matches the directory group with this DN (LDAP corp; imported files), never a SCIM displayName",
        ),
        ("mappings[1] (eng)", True, "matches groups of corp with this CN"),
        (
            "mappings[2] (Eng)",
            True,
            "matches groups of corp with this CN; SCIM groups of okta or evil with this displayName",
        ),
        (f"mappings[3] ({ADMINS_DN})", True, "matches SCIM groups of evil with this displayName (a DN string)"),
    ]
    alone = settings_from_dict({"scim": {"tokens": [{"name": "okta", "token": "t"}]}, "mappings": [{"group": "eng"}]})
    assert [r.detail for r in _mapping_scopes(alone)] == [
        "matches SCIM groups of okta with this displayName (and imported files' groups of this name)"
    ]
    directory = settings_from_dict({**config([{"group": "eng"}]), "scim": {}})
    assert [r.detail for r in _mapping_scopes(directory)] == [
        "matches directory groups with this CN (LDAP corp; imported files)"
    ]


def test_an_ldap_group_dn_mapping_can_be_narrowed_to_one_directory() -> None:
    alice = who("corp", "alice")
    bob = Identity("hr", "hr-bob", "bob", "bob@example.org")
    groups = [ldap_group("llm-admins", alice), Group("hr", "hr-g", "llm-admins", ADMINS_DN, frozenset({"hr-bob"}))]
    state = desired_state(
        [alice, bob], groups, rules([{"group": ADMINS_DN, "role": "proxy_admin", "sources": ["corp"]}])
    )
    assert set(state.users) == {"alice"}


def test_an_authoritative_mapping_of_another_source_does_not_silence_a_directory_grant() -> None:
    alice = who("corp", "alice")
    group = Group("corp", "g", "research", "cn=research,dc=x", frozenset({alice.external_id}), {"max_budget": 7})
    mapping = {"group": "research", "max_budget": 1, "authoritative": True, "sources": ["okta"]}
    assert desired_state([alice], [group], rules([mapping])).users["alice"].max_budget == 7.0
    mapping["sources"] = ["corp"]
    assert desired_state([alice], [group], rules([mapping])).users["alice"].max_budget == 1.0


@pytest.mark.parametrize(
    ("text", "dn"),
    [(ADMINS_DN, True), ("CN = Eng", True), ("2.5.4.3=x,dc=y", True), ("Okta-Admins", False), ("Data Science", False)],
)
def test_what_counts_as_a_dn(text: str, dn: bool) -> None:
    assert is_dn(text) is dn


def test_unknown_source_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"mappings\[0\]\.sources: no source is named 'okat'"):
        settings_from_dict(config([{"group": "g", "sources": ["okat"]}]))
    with pytest.raises(ConfigError, match=r"identity\.merge_sources: no source is named 'hr'"):
        settings_from_dict(config([], identity={"merge_by": "email", "merge_sources": ["corp", "hr"]}))
    with pytest.raises(ConfigError, match=r"identity\.merge_by"):
        settings_from_dict(config([], identity={"merge_by": "name"}))


# -- a source never affects a person another source owns -----------------------------------------------------------
def test_another_sources_disabled_identity_with_the_same_email_never_suspends_the_owner() -> None:
    alice = who("corp", "alice", recorded=1)
    mallory = who("evil", "mallory", email="ALICE@example.org", recorded=2, active=False)
    state = desired_state(
        [mallory, alice], [ldap_group("eng", alice), scim_group("evil", "eng", mallory)], rules([ENG])
    )
    assert state.users["alice"].active and state.users["alice"].source == "corp"
    assert state.users["mallory"].active is False  # its own (never provisioned) user, nobody else's
    assert not state.conflicts  # a disabled identity needs no email: nothing is refused


def test_another_sources_identity_claiming_a_user_id_is_refused() -> None:
    alice = who("corp", "alice", recorded=1)
    mallory = who("evil", "alice", email="m@evil.test", recorded=2, active=False)
    state = desired_state([mallory, alice], [ldap_group("eng", alice)], rules([ENG]))
    assert state.users["alice"].source == "corp" and state.users["alice"].active
    (conflict,) = state.conflicts
    assert (conflict.kind, conflict.refused, conflict.holder) == ("user_id", mallory, alice)
    assert "merge_by" in state.problems[0] and not state.held  # the user_id is alice's: nothing to hold


def test_an_active_identity_of_another_source_with_a_held_email_is_a_conflict_not_a_merge() -> None:
    alice = who("corp", "alice", recorded=1)
    olga = who("okta", "alice.okta", email="alice@example.org", recorded=2)
    groups = [ldap_group("eng", alice), scim_group("okta", "eng", olga)]
    state = desired_state([olga, alice], groups, rules([ENG]))
    assert set(state.users) == {"alice"} and state.held == {"alice.okta"}
    assert "email 'alice@example.org' of okta 'alice.okta'" in state.problems[0]


# -- within a source --------------------------------------------------------------------------------------------
def test_a_second_username_with_an_existing_email_is_refused_and_suspends_nobody() -> None:
    six = [who("okta", f"p{i}", recorded=i) for i in range(6)]
    dup = who("okta", "p0-again", email="P0@example.org", recorded=10)
    groups = [scim_group("okta", "eng", *six, dup)]
    state = desired_state([dup, *six], groups, rules([ENG]))
    assert set(state.users) == {f"p{i}" for i in range(6)}
    assert state.held == {"p0-again"} and [c.kind for c in state.conflicts] == ["email"]
    managed = {
        uid: ManagedUser(uid, "okta", f"okta-{uid}", "active", {"user_email": f"{uid}@example.org"})
        for uid in [*state.users, "p0-again"]
    }
    plan = make_plan(state, managed, {}, PlanPolicy(unmapped_users="deactivate"))
    assert [c.action for c in plan.changes if c.action in ("suspend", "delete")] == []
    assert plan.problems == tuple(state.problems)


def test_a_disabled_holder_does_not_keep_an_email_from_an_active_person() -> None:
    leaver = who("corp", "jsmith", email="j@example.org", recorded=1, active=False)
    rehire = who("corp", "john.smith", email="j@example.org", recorded=2)
    state = desired_state([leaver, rehire], [ldap_group("eng", leaver, rehire)], rules([ENG]))
    assert state.users["john.smith"].active and state.users["jsmith"].active is False and not state.conflicts


def test_people_without_an_email_are_keyed_by_source_and_never_merged() -> None:
    a, b = who("corp", "svc-a", email=""), who("corp", "svc-b", email="")
    c = who("okta", "svc-c", email="")
    merge = {"identity": {"merge_by": "email"}}
    state = desired_state([a, b, c], [ldap_group("eng", a, b), scim_group("okta", "eng", c)], rules([ENG], **merge))
    assert set(state.users) == {"svc-a", "svc-b", "svc-c"} and not state.conflicts
    assert all(u.email == "" for u in state.users.values())


# -- merge_by: email (opt-in) -------------------------------------------------------------------------------------
def _merge_config(**identity: Any) -> dict[str, Any]:
    every = ENG["sources"]
    cfg = config([{**ENG, "models": ["a"]}, {"group": "power", "models": ["b"], "sources": every}])
    cfg["ldap"][0]["priority"] = 1
    cfg["scim"]["tokens"][0]["priority"] = 5
    cfg["identity"] = {"merge_by": "email", **identity}
    return cfg


def test_merge_by_email_makes_one_person_described_by_the_highest_priority_source() -> None:
    r = rules_from_settings(settings_from_dict(_merge_config()))
    alice = who("corp", "alice", recorded=1, active=False)
    olga = who("okta", "alice.okta", email="Alice@Example.org", recorded=2)
    state = desired_state([alice, olga], [ldap_group("eng", alice), scim_group("okta", "power", olga)], r)
    assert list(state.users) == ["alice.okta"] and not state.conflicts
    user = state.users["alice.okta"]
    assert (user.source, user.active, user.models) == ("okta", True, ("a", "b"))


def test_merge_sources_limits_who_merges_and_the_rest_conflict() -> None:
    r = rules_from_settings(settings_from_dict(_merge_config(merge_sources=["corp", "okta"])))
    alice = who("corp", "alice", recorded=1)
    olga = who("okta", "alice.okta", email="alice@example.org", recorded=2)
    mallory = who("evil", "mallory", email="alice@example.org", recorded=3)
    groups = [ldap_group("eng", alice), scim_group("okta", "eng", olga), scim_group("evil", "power", mallory)]
    state = desired_state([mallory, olga, alice], groups, r)
    assert list(state.users) == ["alice.okta"] and state.users["alice.okta"].models == ("a",)
    (conflict,) = state.conflicts
    assert (conflict.refused, conflict.holder) == (mallory, alice) and state.held == {"mallory"}


def test_merging_never_merges_two_identities_of_one_source() -> None:
    r = rules_from_settings(settings_from_dict(_merge_config()))
    one, two = (
        who("okta", "a1", email="a@example.org", recorded=1),
        who("okta", "a2", email="a@example.org", recorded=2),
    )
    state = desired_state([one, two], [scim_group("okta", "eng", one, two)], r)
    assert list(state.users) == ["a1"] and state.held == {"a2"}


# -- properties --------------------------------------------------------------------------------------------------
_identities = st.lists(
    st.builds(
        Identity,
        source=st.sampled_from(["corp", "okta", "evil"]),
        external_id=st.sampled_from([f"x{i}" for i in range(8)]),
        user_id=st.sampled_from(["u0", "u1", "u2", "u3"]),
        email=st.sampled_from(["", "a@example.org", "A@example.org", "b@example.org"]),
        display_name=st.none(),
        active=st.booleans(),
        recorded=st.one_of(st.none(), st.integers(1, 50)),
    ),
    max_size=12,
    unique_by=lambda i: (i.source, i.external_id),
)


@settings(max_examples=300, deadline=None)
@given(_identities, st.randoms(use_true_random=False), st.booleans())
def test_emails_and_user_ids_have_one_holder_whatever_the_input_order(
    identities: list[Identity], shuffle: Any, merging: bool
) -> None:
    r = rules([ENG], identity={"merge_by": "email" if merging else "none"})
    groups = [
        Group(source, f"g-{source}", "eng", None, frozenset(i.external_id for i in identities if i.source == source))
        for source in ("corp", "okta", "evil")
    ]
    state = desired_state(identities, groups, r)
    again = list(identities)
    shuffle.shuffle(again)
    assert desired_state(again, groups, r) == state
    active_emails = [u.email.lower() for u in state.users.values() if u.active and u.email]
    assert len(active_emails) == len(set(active_emails)), "an active email given to two people"
    people, conflicts = identify_people(identities, r)
    seen = [i for person in people for i in person] + [c.refused for c in conflicts]
    assert sorted(seen, key=repr) == sorted(identities, key=repr), "every identity is one person's or refused"
    for person in people:
        assert len({i.source for i in person}) == len(person), "two identities of one source merged"
        if not merging:
            assert len(person) == 1
    for user in state.users.values():
        owner = next(i for i in identities if (i.source, i.external_id) == (user.source, user.external_id))
        assert user.active == owner.active and user.user_id == owner.user_id
    assert not state.held & set(state.users)


def test_the_person_whose_litellm_user_carries_an_email_keeps_it_when_another_changes_to_it() -> None:
    first = who("corp", "p0", email="p1@example.org", recorded=1)  # p0 changed their email to p1's
    second = who("corp", "p1", recorded=2)
    groups, r = [ldap_group("eng", first, second)], rules([ENG])
    assert desired_state([first, second], groups, r).held == {"p1"}  # by recording order alone
    state = desired_state([first, second], groups, r, email_owners={"p1@example.org": "p1", "p0@example.org": "p0"})
    assert set(state.users) == {"p1"} and state.held == {"p0"}
    assert state.conflicts[0].refused == first


def test_a_refused_person_keeps_the_teams_syncd_gave_them() -> None:
    from syncd.litellm import current_team
    from syncd.model import ManagedTeam
    from syncd.plan import MARKER, plan_teams

    raw = [
        {
            "team_id": "t1",
            "team_alias": "platform",
            "metadata": {"syncd": dict(MARKER)},
            "members_with_roles": [{"user_id": "p0-again", "role": "user"}],
            "team_memberships": [],
        }
    ]
    current = [current_team(team) for team in raw]
    record = ManagedTeam("platform", "t1", True, {"team_alias": "platform"}, frozenset({"p0-again"}))
    users = {"p0-again": "active"}
    left = plan_teams({}, [], current, {"platform": record}, users)
    assert [(c.action, c.user_id) for c in left.teams] == [("remove_member", "p0-again")]  # what held prevents
    kept = plan_teams({}, [], current, {"platform": record}, users, held={"p0-again"})
    assert kept.teams == ()


def test_a_thousand_conflicts_are_listed_fifty_and_counted() -> None:
    ldap = [who("corp", f"u{i}", recorded=i) for i in range(1000)]
    okta = [who("okta", f"u{i}.okta", email=f"u{i}@example.org", recorded=2000 + i) for i in range(1000)]
    state = desired_state(ldap + okta, [ldap_group("eng", *ldap), scim_group("okta", "eng", *okta)], rules([ENG]))
    assert (
        len(state.conflicts) == 1000 and len(state.held) == 1000 and set(state.users) == {f"u{i}" for i in range(1000)}
    )
    assert len(state.problems) == 51 and state.problems[-1].startswith("... and 950 more identity conflicts")


def test_a_merged_person_refused_a_user_id_names_the_user_id_in_every_conflict() -> None:
    r = rules([ENG], identity={"merge_by": "email"})
    holder = who("evil", "alice", email="m@example.org", recorded=1)
    corp, okta = who("corp", "alice", recorded=2), who("okta", "alice.okta", email="alice@example.org", recorded=3)
    state = desired_state([holder, corp, okta], [ldap_group("eng", corp)], r)
    assert [(c.kind, c.value, c.refused.source) for c in state.conflicts] == [
        ("user_id", "alice", "corp"),
        ("user_id", "alice", "okta"),
    ]


_KEYS = ["eng", "ENG ", ADMINS_DN, ADMINS_DN.upper(), "cn=eng"]


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(_KEYS),
    sources=st.one_of(st.none(), st.sets(st.sampled_from(["corp", "okta", "evil"]), min_size=1).map(sorted)),
    group_source=st.sampled_from(["corp", "okta", "evil"]),
    group_name=st.sampled_from(_KEYS),
    with_dn=st.booleans(),
)
def test_a_mapping_matches_only_the_sources_and_the_kind_it_allows(
    key: str, sources: list[str] | None, group_source: str, group_name: str, with_dn: bool
) -> None:
    from syncd.mapping import grants_for, normalise_group_key

    mapping: dict[str, Any] = {"group": key, "models": ["m"]}
    if sources is not None:
        mapping["sources"] = sources
    scim = group_source != "corp"
    dn = ADMINS_DN if with_dn and not scim else None  # only directory groups have a DN
    group = Group(group_source, "g", group_name, dn, frozenset({"x"}))
    if sources is None and not is_dn(key):
        with pytest.raises(ConfigError, match="say which with `sources:`"):
            rules([mapping])  # a name every tenant could carry
        return
    matched = bool(grants_for([group], rules([mapping])))
    if sources is not None and group_source not in sources:
        assert not matched, "a mapping matched a source it does not name"
    if scim and is_dn(key) and sources is None:
        assert not matched, "a DN matched a SCIM group by default"
    allowed = sources is None or group_source in sources
    by_name = normalise_group_key(key) == normalise_group_key(group_name) and (
        not is_dn(key) or (scim and sources is not None)
    )
    by_dn = dn is not None and normalise_group_key(key) == normalise_group_key(dn)
    assert matched == (allowed and (by_name or by_dn))


def test_a_source_of_oauth_clients_only_is_a_tenant_a_mapping_by_name_must_name_sources() -> None:
    """An OAuth client's own source (no static token) can create any group, like a token's: a plain name is refused."""
    from syncd.secret_hash import hash_secret

    raw = {
        "ldap": [{"name": "corp", "url": "ldap://127.0.0.1", "users": {"base_dn": "dc=example,dc=org"}}],
        "scim": {
            "oauth": {"signing_key": "an-oauth-signing-key-for-this-test-only-0123456789"},
            "oauth_clients": [{"client_id": "entra-app", "source": "entra", "secret_hashes": [hash_secret("s" * 40)]}],
        },
        "mappings": [{"group": "llm-admins", "role": "proxy_admin"}],
    }
    with pytest.raises(ConfigError, match=r"corp \(LDAP\) and entra \(SCIM\): say which with `sources:`"):
        settings_from_dict(raw)
    raw["mappings"] = [{"group": "llm-admins", "role": "proxy_admin", "sources": ["corp"]}]
    assert rules_from_settings(settings_from_dict(raw)) is not None
