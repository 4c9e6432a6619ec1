"""Tenant isolation end to end (issue 14): `syncd serve` and `syncd sync` processes, a real slapd, two SCIM tokens and
the fake LiteLLM, on SQLite and PostgreSQL.

- a SCIM group named after an LDAP mapping's DN grants nothing;
- a mapping by name that a tenant's group could also carry must name its sources (serve and check-config exit 2);
  with `sources: [corp]`, a SCIM group named like the LDAP group's CN grants nothing;
- a second token cannot get another source's person suspended, by their email or by their user_id;
- a duplicate email inside one source is a reported conflict (plan, explain, metric), never a suspension;
- `identity.merge_by: email` merges two sources on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from _daemon import (
    GROUP_SCHEMA,
    MASTER_KEY,
    PATCH_SCHEMA,
    SCIM_TOKEN,
    USER_SCHEMA,
    base_config,
    ldap_source,
    wait_for,
)

EVIL_TOKEN = "scim-evil-tenant-test-token"


def _config(database_url: str, fake: Any, slapd: Any, directory: Any, **extra: Any) -> dict[str, Any]:
    config = base_config(database_url, fake.url)
    config["ldap"] = [ldap_source(slapd, directory.base, full="1h", incremental="1h")]
    config["scim"]["tokens"].append({"name": "evil", "token": EVIL_TOKEN})
    config["mappings"] = [
        {"group": "engineers", "role": "internal_user", "models": ["gpt-4o"], "sources": ["corp", "okta", "evil"]},
        {"group": f"cn=llm-admins,ou=groups,{directory.base}", "role": "proxy_admin"},
    ]
    config["policy"] = {"unmapped_users": "deactivate"}
    config.update(extra)
    return config


def _scim(syncd: Any, method: str, path: str, body: Any = None, token: str = SCIM_TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    return httpx.request(method, f"{syncd.url}/scim/v2{path}", json=body, headers=headers, timeout=10)


def _user(syncd: Any, token: str, user_name: str, email: str, *, active: bool = True) -> httpx.Response:
    body = {"schemas": [USER_SCHEMA], "userName": user_name, "active": active, "emails": [{"value": email}]}
    return _scim(syncd, "POST", "/Users", body, token)


def _group(syncd: Any, token: str, name: str, member_ids: list[str]) -> None:
    created = _scim(syncd, "POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": name}, token)
    assert created.status_code == 201, created.text
    add = {"op": "add", "path": "members", "value": [{"value": i} for i in member_ids]}
    patched = _scim(
        syncd, "PATCH", f"/Groups/{created.json()['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [add]}, token
    )
    assert patched.status_code in (200, 204), patched.text


def _runs(syncd: Any) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(syncd.get("/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == "syncd_runs_total")


def _syncd(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "syncd", *args, "--config", str(config_path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _suspended(user: dict[str, Any]) -> bool:
    return (user.get("metadata") or {}).get("scim_active") is False


def _start(launch: Any, config: dict[str, Any], fake: Any, *people: str) -> Any:
    syncd = launch(config, args=("--migrate",))
    syncd.wait_healthy()
    wait_for(lambda: set(people) <= set(fake.users()), 30, f"{people} in LiteLLM after the first full pull")
    return syncd


def _mallory_in_an_evil_group(syncd: Any, fake: Any, group: str) -> dict[str, dict[str, Any]]:
    """The evil token creates mallory in a group of that name; after its reconcile, serve stops and a full
    `syncd sync` runs: what LiteLLM then holds."""
    runs = _runs(syncd)
    mallory = _user(syncd, EVIL_TOKEN, "mallory", "mallory@evil.example.com")
    assert mallory.status_code == 201, mallory.text
    _group(syncd, EVIL_TOKEN, group, [mallory.json()["id"]])
    wait_for(lambda: _runs(syncd) > runs, 15, "the reconcile after the SCIM writes")
    syncd.stop()
    full = _syncd(syncd.config_path, "sync", "--json")
    assert full.returncode == 0, full.stderr[-2000:]
    return fake.users()


def test_a_scim_group_named_after_an_ldap_dn_grants_nothing(
    database_url: str, fake: Any, launch: Any, slapd: Any, directory: Any
) -> None:
    alice = directory.add_user("alice")
    admins = directory.add_group("llm-admins", [alice])
    config = _config(database_url, fake, slapd, directory)
    syncd = _start(launch, config, fake, "alice")
    assert fake.users()["alice"]["user_role"] == "proxy_admin"

    users = _mallory_in_an_evil_group(syncd, fake, admins.upper())  # cn=llm-admins,ou=groups,... in capitals
    assert "mallory" not in users, "a DN-named SCIM group must grant nothing"
    assert users["alice"]["user_role"] == "proxy_admin" and not _suspended(users["alice"])
    explained = _syncd(syncd.config_path, "explain", "mallory", "--offline", "--json")
    assert explained.returncode == 0, explained.stderr[-2000:]
    data = json.loads(explained.stdout)
    assert [(g["source"], g["counts"]) for g in data["groups"]] == [("evil", False)]
    assert data["grants"] == [] and data["desired"] is None


def test_a_name_a_tenant_could_carry_must_name_its_sources_and_then_grants_only_there(
    database_url: str, fake: Any, launch: Any, slapd: Any, directory: Any, tmp_path: Path
) -> None:
    alice = directory.add_user("alice")
    directory.add_group("llm-admins", [alice])
    config = _config(database_url, fake, slapd, directory)
    config["mappings"].append({"group": "llm-admins", "role": "proxy_admin"})  # a CN, no sources: refused
    ambiguous = tmp_path / "ambiguous.yaml"
    ambiguous.write_text(yaml.safe_dump(config))
    expected = (
        "mappings[2].group: 'llm-admins' is a group name, not a DN, and a group of that name may come from corp "
        "(LDAP), okta (SCIM) and evil (SCIM): say which with `sources:` (e.g. sources: [corp])"
    )
    for command in (("check-config",), ("serve", "--migrate")):
        refused = _syncd(ambiguous, *command)
        assert refused.returncode == 2 and expected in refused.stderr, refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr and "mappings[0]" not in refused.stderr  # engineers names its own
    assert "llm-admins" not in fake.users() and fake.users() == {}

    config["mappings"][2]["sources"] = ["corp"]
    syncd = _start(launch, config, fake, "alice")
    checked = _syncd(syncd.config_path, "check-config")
    assert "ok    mappings[2] (llm-admins): matches groups of corp with this CN" in checked.stdout, checked.stdout
    assert (
        "ok    mappings[0] (engineers): matches groups of corp with this CN; SCIM groups of okta or evil with this "
        "displayName"
    ) in checked.stdout
    users = _mallory_in_an_evil_group(syncd, fake, "LLM-Admins")  # the LDAP group's CN, in other capitals
    assert "mallory" not in users, "a SCIM group named like the LDAP group's CN must grant nothing"
    assert users["alice"]["user_role"] == "proxy_admin"
    explained = json.loads(_syncd(syncd.config_path, "explain", "mallory", "--offline", "--json").stdout)
    assert [(g["source"], g["name"], g["counts"]) for g in explained["groups"]] == [("evil", "LLM-Admins", False)]


def test_a_second_tenant_cannot_suspend_another_sources_person(
    database_url: str, fake: Any, launch: Any, slapd: Any, directory: Any
) -> None:
    directory.add_group("engineers", [directory.add_user("alice"), directory.add_user("bob")])
    config = _config(database_url, fake, slapd, directory)
    syncd = _start(launch, config, fake, "alice", "bob")

    runs = _runs(syncd)
    # the same email, disabled; the same user_id, disabled; the same email, active and in a mapped group
    attempts = [
        _user(syncd, EVIL_TOKEN, "mallory", "ALICE@example.org", active=False),
        _user(syncd, EVIL_TOKEN, "alice", "mallory@evil.example.com", active=False),
        _user(syncd, EVIL_TOKEN, "trudy", "bob@example.org"),
    ]
    assert [a.status_code for a in attempts] == [201, 201, 201], [a.text for a in attempts]
    _group(syncd, EVIL_TOKEN, "engineers", [a.json()["id"] for a in attempts])
    wait_for(lambda: _runs(syncd) > runs, 15, "the reconcile after the SCIM writes")
    syncd.stop()

    full = _syncd(syncd.config_path, "sync", "--json")
    assert full.returncode == 0, full.stderr[-2000:]
    users = fake.users()
    assert {"alice", "bob"} <= set(users) and not {"mallory", "trudy"} & set(users)
    assert not _suspended(users["alice"]) and not _suspended(users["bob"])
    assert users["alice"]["user_email"] == "alice@example.org"

    plan = _syncd(syncd.config_path, "plan", "--json")
    assert plan.returncode == 0, plan.stderr[-2000:]
    body = json.loads(plan.stdout)
    assert body["changes"] == []
    problems = "\n".join(body["problems"])
    assert "user_id 'alice' of evil" in problems and "email 'bob@example.org' of evil 'trudy'" in problems
    explained = json.loads(_syncd(syncd.config_path, "explain", "alice", "--offline", "--json").stdout)
    assert [i["source"] for i in explained["identities"]] == ["corp"]
    assert explained["desired"]["active"] == {"value": True, "from": {"kind": "source", "name": "corp"}}
    assert [c["kind"] for c in explained["conflicts"]] == ["user_id"]


def test_a_duplicate_email_inside_one_source_is_a_conflict_never_a_suspension(
    database_url: str, fake: Any, launch: Any, slapd: Any, directory: Any
) -> None:
    six = [directory.add_user(f"p{i}") for i in range(6)]
    engineers = directory.add_group("engineers", six)
    config = _config(database_url, fake, slapd, directory)
    config["ldap"] = [ldap_source(slapd, directory.base, full="2s", incremental="1h")]  # a full run every 2 s
    people = [f"p{i}" for i in range(6)]
    syncd = _start(launch, config, fake, *people)
    wait_for(lambda: _runs(syncd) >= 1, 15, "a full run")
    assert syncd.metric("syncd_identity_conflicts", kind="email") == 0

    # a seventh entry with p0's email, in the same group
    dn = f"uid=p6,ou=people,{directory.base}"
    assert directory.conn.add(dn, ["inetOrgPerson"], {"uid": "p6", "cn": "P6", "sn": "p6", "mail": "P0@example.org"})
    directory.add_member(engineers, dn)
    wait_for(lambda: syncd.metric("syncd_identity_conflicts", kind="email") == 1, 30, "the conflict counted")

    # the same inside one SCIM token: a second userName with an existing email
    first = _user(syncd, SCIM_TOKEN, "q0", "q0@example.org")
    second = _user(syncd, SCIM_TOKEN, "q0-again", "Q0@example.org")
    assert first.status_code == 201 and second.status_code in (201, 409), second.text
    _group(
        syncd,
        SCIM_TOKEN,
        "engineers",
        [first.json()["id"]] + ([second.json()["id"]] if second.status_code == 201 else []),
    )
    wait_for(lambda: "q0" in fake.users(), 15, "the first SCIM user in LiteLLM")
    syncd.stop()

    full = _syncd(syncd.config_path, "sync", "--json")
    assert full.returncode == 0, full.stderr[-2000:]
    users = fake.users()
    assert {*people, "q0"} <= set(users) and not {"p6", "q0-again"} & set(users)
    assert [u for u in users.values() if _suspended(u)] == []
    plan = json.loads(_syncd(syncd.config_path, "plan", "--json").stdout)
    assert plan["changes"] == []
    assert any("email 'P0@example.org' of corp 'p6'" in p and "'p0'" in p for p in plan["problems"])
    text = _syncd(syncd.config_path, "plan")
    assert "warning: email 'P0@example.org' of corp 'p6'" in text.stdout
    explained = json.loads(_syncd(syncd.config_path, "explain", "p6", "--offline", "--json").stdout)
    (conflict,) = explained["conflicts"]
    assert conflict["kind"] == "email" and conflict["holder"]["external_id"] != conflict["refused"]["external_id"]
    assert explained["desired"] is None and explained["next_change"] == []
    text = _syncd(syncd.config_path, "explain", "p6", "--offline").stdout
    assert "corp: p6 <P0@example.org> active" in text and "conflict: email 'P0@example.org' of corp 'p6'" in text


def test_merge_by_email_is_an_opt_in_that_makes_two_sources_one_person(
    database_url: str, fake: Any, launch: Any, slapd: Any, directory: Any
) -> None:
    directory.add_group("engineers", [directory.add_user("alice")])
    config = _config(
        database_url, fake, slapd, directory, identity={"merge_by": "email", "merge_sources": ["corp", "okta"]}
    )
    config["ldap"][0]["priority"] = 10
    config["mappings"].append({"group": "power", "sources": ["okta"], "max_budget": 50})
    syncd = _start(launch, config, fake, "alice")

    runs = _runs(syncd)
    okta_alice = _user(syncd, SCIM_TOKEN, "alice.okta", "Alice@Example.org")
    evil_alice = _user(syncd, EVIL_TOKEN, "alice.evil", "alice@example.org")
    assert okta_alice.status_code == 201 and evil_alice.status_code == 201
    _group(syncd, SCIM_TOKEN, "power", [okta_alice.json()["id"]])
    _group(syncd, EVIL_TOKEN, "power", [evil_alice.json()["id"]])
    wait_for(lambda: fake.users()["alice"].get("max_budget") == 50, 15, "the okta grant on the merged person")
    wait_for(lambda: _runs(syncd) > runs, 15, "the reconcile after the SCIM writes")
    syncd.stop()

    full = _syncd(syncd.config_path, "sync", "--json")
    assert full.returncode == 0, full.stderr[-2000:]
    users = fake.users()
    assert not {"alice.okta", "alice.evil"} & set(users)
    assert users["alice"]["models"] == ["gpt-4o"] and users["alice"]["max_budget"] == 50
    explained = json.loads(_syncd(syncd.config_path, "explain", "alice", "--offline", "--json").stdout)
    assert sorted(i["source"] for i in explained["identities"]) == ["corp", "okta"]
    assert [c["refused"]["source"] for c in explained["conflicts"]] == ["evil"]
    assert {(g["source"], g["name"], g["counts"]) for g in explained["groups"]} == {
        ("corp", "engineers", True),
        ("okta", "power", True),
    }
    assert MASTER_KEY not in full.stdout + full.stderr


def test_a_person_changing_their_email_to_anothers_takes_it_from_nobody(
    database_url: str, fake: Any, tmp_path: Path, slapd: Any, directory: Any
) -> None:
    import ldap3

    directory.add_group("engineers", [directory.add_user("p0"), directory.add_user("p1")])
    config_path = tmp_path / "sync.yaml"
    config_path.write_text(yaml.safe_dump(_config(database_url, fake, slapd, directory)))
    assert _syncd(config_path, "db", "upgrade").returncode == 0
    first = _syncd(config_path, "sync", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    assert {"p0", "p1"} <= set(fake.users())

    # p0 (recorded first) now says it has p1's email: p1's LiteLLM user carries it, so p1 keeps it
    change = {"mail": [(ldap3.MODIFY_REPLACE, ["p1@example.org"])]}
    assert directory.conn.modify(f"uid=p0,ou=people,{directory.base}", change), directory.conn.result
    again = _syncd(config_path, "sync", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert report["plan"]["changes"] == [], report["plan"]["changes"]
    assert any("email 'p1@example.org' of corp 'p0'" in p for p in report["problems"])
    users = fake.users()
    assert users["p0"]["user_email"] == "p0@example.org" and users["p1"]["user_email"] == "p1@example.org"
    assert not _suspended(users["p0"]) and not _suspended(users["p1"])
