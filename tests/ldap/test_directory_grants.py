"""Grants kept in the directory (issue 9), against the real slapd with syncd's shipped schema (config/ldap/) loaded."""

from __future__ import annotations

import json
from typing import Any

import ldap3
from _tree import Tree

from syncd.mapping import desired_state, rules_from_settings
from syncd.model import Snapshot
from syncd.settings import settings_from_dict

GRANT_ATTRIBUTES = {
    "role": "litellmRole",
    "models": "litellmModels",
    "max_budget": "litellmMaxBudget",
    "budget_duration": "litellmBudgetDuration",
    "tpm_limit": "litellmTpmLimit",
    "auto_create_keys": "litellmAutoCreateKeys",
    "teams": "litellmTeams",
    "priority": "litellmGrantPriority",
}


def grant(tree: Tree, group_dn: str, **attributes: Any) -> None:
    changes: dict[str, Any] = {"objectClass": [(ldap3.MODIFY_ADD, ["litellmGrantHolder"])]}
    changes.update(
        {
            name: [(ldap3.MODIFY_REPLACE, value if isinstance(value, list) else [value])]
            for name, value in attributes.items()
        }
    )
    assert tree.conn.modify(group_dn, changes), tree.conn.result


def source(tree: Tree, **groups: Any) -> Any:
    return tree.source(
        groups={"mapping_attributes": GRANT_ATTRIBUTES, "grant_attribute": "litellmGrant", **groups},
        users={"override_attributes": {"max_budget": "litellmMaxBudget", "role": "litellmRole"}},
    )


def desired(snapshot: Snapshot, mappings: list[dict[str, Any]] | None = None) -> Any:
    rules = rules_from_settings(settings_from_dict({"mappings": mappings or []}))
    return desired_state(snapshot.identities, snapshot.groups, rules)


def test_a_group_grant_in_attributes_gives_its_members_every_field(tree: Tree) -> None:
    alice = tree.add_user("alice")
    ml = tree.add_group("ml", [alice])
    grant(
        tree,
        ml,
        litellmRole="proxy_admin_viewer",
        litellmModels=["gpt-4o", "claude"],
        litellmMaxBudget="75.5",
        litellmBudgetDuration="yearly",
        litellmTpmLimit="9000",
        litellmAutoCreateKeys="TRUE",
        litellmTeams="ml",
    )
    snapshot = source(tree).pull()
    assert snapshot.complete, snapshot.problems
    user = desired(snapshot).users["alice"]
    assert (user.role, user.models, user.max_budget, user.budget_duration) == (
        "proxy_admin_viewer",
        ("claude", "gpt-4o"),
        75.5,
        "365d",
    )
    assert (user.tpm_limit, user.auto_create_keys, user.teams) == (9000, True, ("ml",))
    assert user.origins["role"].kind == "group_attribute" and user.origins["role"].name == ml


def test_a_json_grant_and_nested_members_inherit_it(tree: Tree) -> None:
    bob = tree.add_user("bob")
    research = tree.add_group("research", [bob])
    parent = tree.add_group("llm", [research])
    grant(tree, parent, litellmGrant='litellm:{"role": "internal_user", "models": ["gpt-4o-mini"], "max_budget": 5}')
    user = desired(source(tree).pull()).users["bob"]
    assert (user.role, user.models, user.max_budget) == ("internal_user", ("gpt-4o-mini",), 5.0)
    assert user.origins["max_budget"].name == parent


def test_a_personal_override_applies_after_the_group_rules(tree: Tree) -> None:
    carol = tree.add_user("carol")
    ml = tree.add_group("ml", [carol])
    grant(tree, ml, litellmMaxBudget="10")
    assert tree.conn.modify(
        carol,
        {
            "objectClass": [(ldap3.MODIFY_ADD, ["litellmGrantHolder"])],
            "litellmMaxBudget": [(ldap3.MODIFY_REPLACE, ["500"])],
        },
    )
    user = desired(source(tree).pull()).users["carol"]
    assert user.max_budget == 500.0 and user.origins["max_budget"].kind == "override"


def test_a_malformed_grant_is_skipped_with_a_warning_and_the_run_goes_on(tree: Tree, caplog: Any) -> None:
    dave, erin = tree.add_user("dave"), tree.add_user("erin")
    bad = tree.add_group("bad", [dave])
    good = tree.add_group("good", [erin])
    grant(tree, bad, litellmMaxBudget="lots")
    grant(tree, good, litellmGrant="litellm:{broken")
    other = tree.add_group("fine", [dave, erin])
    grant(tree, other, litellmRole="internal_user_viewer")
    snapshot = source(tree).pull()
    assert snapshot.complete and snapshot.counters["grant_errors"] == 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"{bad}: attribute litellmMaxBudget (max_budget): 'lots' is not a number; grant ignored" in messages
    assert f"{good}: attribute litellmGrant: broken JSON" in messages
    state = desired(snapshot)
    assert state.users["dave"].role == "internal_user_viewer" and state.users["dave"].max_budget is None


def test_only_allowed_groups_may_grant_proxy_admin(tree: Tree, caplog: Any) -> None:
    mallory = tree.add_user("mallory")
    selfservice = tree.add_group("self-service", [mallory])
    grant(tree, selfservice, litellmRole="proxy_admin", litellmModels="gpt-4o")
    elsewhere = f"ou=admins-only,{tree.base}"
    snapshot = source(tree, allow_admin_grants_from=[elsewhere]).pull()
    user = desired(snapshot).users["mallory"]
    assert user.role == "internal_user" and user.models == ("gpt-4o",)
    assert "may not grant proxy_admin" in " ".join(r.getMessage() for r in caplog.records)
    allowed = desired(source(tree, allow_admin_grants_from=[tree.groups]).pull()).users["mallory"]
    assert allowed.role == "proxy_admin"


def test_an_authoritative_config_mapping_wins_over_the_directory(tree: Tree) -> None:
    frank = tree.add_user("frank")
    ml = tree.add_group("ml", [frank])
    grant(tree, ml, litellmRole="proxy_admin_viewer", litellmMaxBudget="100")
    snapshot = source(tree).pull()
    assert desired(snapshot, [{"group": "ml", "max_budget": 1}]).users["frank"].max_budget == 100.0
    user = desired(snapshot, [{"group": ml, "max_budget": 1, "authoritative": True}]).users["frank"]
    assert user.max_budget == 1.0 and user.role == "internal_user"


def test_a_grant_changed_in_the_directory_is_seen_by_the_incremental_pull(tree: Tree) -> None:
    grace = tree.add_user("grace")
    ml = tree.add_group("ml", [grace])
    grant(tree, ml, litellmMaxBudget="10")
    ldap_source = source(tree)
    full = ldap_source.pull()
    assert desired(full).users["grace"].max_budget == 10.0
    assert tree.conn.modify(ml, {"litellmMaxBudget": [(ldap3.MODIFY_REPLACE, ["20"])]})
    incremental = ldap_source.pull(since=full.high_water_mark)
    assert incremental.incremental and [g.dn for g in incremental.groups] == [ml]
    assert incremental.groups[0].grant == {"max_budget": 20.0}
    assert json.dumps(dict(incremental.groups[0].grant))


def test_explain_shows_the_nesting_path_and_the_directory_grant(tree: Tree, tmp_path: Any) -> None:
    from syncd.explain import explain, render_explanation
    from syncd.store import make_engine, upgrade
    from syncd.store.repository import SyncStore

    henry = tree.add_user("henry")
    team = tree.add_group("team-a", [henry])
    research = tree.add_group("research", [team])
    llm = tree.add_group("llm", [research])
    grant(tree, llm, litellmRole="internal_user", litellmMaxBudget="42")
    engine = make_engine(f"sqlite:///{tmp_path}/explain.db")
    upgrade(engine)
    store = SyncStore(engine)
    store.record_snapshot(source(tree).pull())
    settings = settings_from_dict({"mappings": [{"group": "research", "models": ["gpt-4o"]}]})
    data = explain(settings, store, None, "henry")
    paths = {g["name"]: g["via"] for g in data["groups"]}
    assert paths == {"team-a": [], "research": ["team-a"], "llm": ["research", "team-a"]}
    assert data["desired"]["max_budget"] == {"value": 42.0, "from": {"kind": "group_attribute", "name": llm}}
    assert data["desired"]["models"]["from"] == {"kind": "mapping", "name": "research"}
    assert f"{llm}  (through research > team-a)" in render_explanation(data)
