"""The `syncd` command line as a user runs it: real processes, the fake LiteLLM over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from syncd.store import make_engine, schema_revision, upgrade
from syncd.store.db import SCHEMA_HEAD
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

MASTER = "sk-cli-master-0f9e8d"
PEOPLE = {
    "source": "hr",
    "users": [
        {"id": "1", "user_id": "alice", "email": "alice@example.com", "name": "Alice"},
        {"id": "2", "user_id": "bob", "email": "bob@example.com"},
        {"id": "3", "user_id": "carol", "email": "carol@example.com", "active": False},
    ],
    "groups": [
        {"id": "g1", "name": "llm-users", "members": ["1", "2", "3"]},
        {"id": "g2", "name": "llm-admins", "members": ["2"]},
    ],
}


class Cli:
    """Runs `python -m syncd` with a config file in a temporary folder."""

    def __init__(self, folder: Path, database_url: str, litellm_url: str, fake: FakeLiteLLM) -> None:
        self.folder, self.fake = folder, fake
        self.config: dict[str, Any] = {
            "database": {"url": database_url},
            "litellm": {"url": litellm_url, "master_key": "${TEST_MASTER_KEY}", "max_retries": 0},
            "mappings": [
                {"group": "llm-users", "models": ["gpt-4o"], "max_budget": 5, "budget_duration": "weekly"},
                {"group": "llm-admins", "role": "proxy_admin"},
            ],
        }
        self.write()

    def write(self) -> Path:
        path = self.folder / "syncd.yaml"
        path.write_text(yaml.safe_dump(self.config))
        return path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"TEST_MASTER_KEY": MASTER, "PATH": "/usr/bin:/bin", "SYNCD_LOG_LEVEL": "INFO"}
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args, "--config", str(self.folder / "syncd.yaml")]
            if args[0] != "--version"
            else [sys.executable, "-m", "syncd", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=self.folder,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode in (0, 1, 3), done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Iterator[Cli]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        yield Cli(tmp_path, database_url, url, app.state.fake)


def test_migrations_upgrade_an_empty_database_and_sync_refuses_an_old_schema(cli: Cli) -> None:
    refused = cli.run("sync")
    assert refused.returncode == 2 and "syncd db upgrade" in refused.stderr and "Traceback" not in refused.stderr
    done = cli.run("db", "upgrade")
    assert done.returncode == 0, done.stderr
    current, head = schema_revision(make_engine(cli.config["database"]["url"]))
    assert current == head and f"-> {head}" in done.stdout
    again = cli.run("db", "upgrade")
    assert again.returncode == 0 and f"database schema at {head}" in again.stdout
    assert head == SCHEMA_HEAD  # the fast check of every run compares with this constant


def test_sync_refuses_a_schema_one_revision_behind(cli: Cli) -> None:
    assert cli.run("db", "upgrade").returncode == 0
    engine = make_engine(cli.config["database"]["url"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    refused = cli.run("sync")
    assert refused.returncode == 2 and "at revision 0003" in refused.stderr and "syncd db upgrade" in refused.stderr


def test_import_plan_sync_end_to_end(cli: Cli) -> None:
    assert cli.run("db", "upgrade").returncode == 0
    (cli.folder / "people.json").write_text(json.dumps(PEOPLE))
    imported = cli.json("import", str(cli.folder / "people.json"))
    assert imported["users"] == 3 and imported["identities_added"] == 3
    plan = cli.json("plan")
    assert plan["summary"]["create"] == 2 and cli.fake.users == {}
    text = cli.run("plan").stdout
    assert "+ create bob: in hr, member of llm-admins, llm-users" in text and "user_role: proxy_admin" in text
    report = cli.json("sync")
    assert report["status"] == "success" and report["exit_code"] == 0
    assert set(cli.fake.users) == {"alice", "bob"} and cli.fake.users["bob"]["user_role"] == "proxy_admin"
    again = cli.run("sync")
    assert again.returncode == 0 and "Plan: no changes (2 unchanged)." in again.stdout
    assert MASTER not in again.stdout + again.stderr


def test_a_held_run_exits_3_and_an_override_applies_it(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    many = {
        "source": "hr",
        "users": [{"user_id": f"u{i}", "email": f"u{i}@example.com"} for i in range(20)],
        "groups": [{"name": "llm-users", "members": [f"u{i}" for i in range(20)]}],
    }
    (cli.folder / "many.json").write_text(json.dumps(many))
    assert cli.run("import", str(cli.folder / "many.json")).returncode == 0
    assert cli.run("sync").returncode == 0
    many["users"] = many["users"][:15]  # five people left the company
    many["groups"][0]["members"] = [f"u{i}" for i in range(15)]  # type: ignore[index]
    (cli.folder / "many.json").write_text(json.dumps(many))
    cli.run("import", str(cli.folder / "many.json"))
    held = cli.run("sync")
    assert held.returncode == 3 and "HELD: 5 deactivations planned" in held.stdout
    assert cli.run("sync", "--allow-mass-deactivation").returncode == 0
    assert sum(1 for u in cli.fake.users.values() if u["metadata"].get("scim_active") is False) == 5


def test_a_held_plan_is_rejected_then_approved_from_the_cli(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))

    def staff(ids: range) -> None:
        data = {
            "source": "hr",
            "users": [{"user_id": f"u{i}", "email": f"u{i}@example.com"} for i in ids],
            "groups": [{"name": "llm-users", "members": [f"u{i}" for i in ids]}],
        }
        (cli.folder / "staff.json").write_text(json.dumps(data))
        assert cli.run("import", str(cli.folder / "staff.json")).returncode == 0

    def suspended() -> set[str]:
        return {u for u, data in cli.fake.users.items() if data["metadata"].get("scim_active") is False}

    staff(range(20))
    assert cli.run("sync").returncode == 0
    staff(range(5, 20))  # five left
    held = cli.run("sync")
    assert held.returncode == 3 and "Held plan 1: 5 deactivation(s) wait" in held.stdout
    rejected = cli.run("reject", "1", "--note", "the HR export is incomplete")
    assert rejected.returncode == 0 and "rejected" in rejected.stdout
    again = cli.run("sync")
    assert again.returncode == 3 and "held plan 1 was rejected" in again.stdout and suspended() == set()
    missing = cli.run("approve", "99")
    assert missing.returncode == 1 and "no held plan 99" in missing.stderr
    approved = cli.json("approve", "1", "--note", "offboarding batch, checked with HR")
    assert approved["applied"] is True and approved["exit_code"] == 0
    assert suspended() == {f"u{i}" for i in range(5)}
    assert cli.run("approve", "1").returncode == 1  # applied: nothing left to approve
    # a plan whose source changes before it is approved is planned again and held again
    staff(range(10, 20))
    assert cli.run("sync").returncode == 3
    staff(range(11, 20))
    changed = cli.run("approve", "2")
    assert (
        changed.returncode == 1 and "its inputs changed" in changed.stderr and "held again as plan 3" in changed.stderr
    )
    assert suspended() == {f"u{i}" for i in range(5)}


def test_a_bad_config_names_the_key_and_shows_no_traceback(cli: Cli) -> None:
    cli.config["mappings"][0]["budget_duration"] = "yearly2"
    cli.config["policy"] = {"deactivation": "vanish"}
    cli.write()
    done = cli.run("sync")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "mappings[0].budget_duration: 'yearly2' is not a duration" in done.stderr
    assert "policy.deactivation: 'vanish' is not one of" in done.stderr


def test_check_config_tries_everything_and_refuses_roles_litellm_refuses(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    done = cli.run("check-config")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    database: reachable" in done.stdout and "ok    litellm:" in done.stdout
    for command in ("check-config", "sync"):
        cli.config["mappings"].append({"group": "customers", "role": "customer"})
        cli.write()
        refused = cli.run(command)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "mappings[2].role: LiteLLM refuses the role 'customer' for users (422)" in refused.stderr
        cli.config["mappings"].pop()
    cli.config["mappings"][0]["budget_duration"] = "600000w"
    cli.write()
    refused = cli.run("sync")
    assert refused.returncode == 2 and "'600000w' is longer than LiteLLM can store" in refused.stderr
    cli.config["mappings"][0]["budget_duration"] = "400000w"
    cli.config["litellm"]["master_key"] = "sk-wrong-key"
    cli.write()
    bad = cli.run("check-config")
    assert bad.returncode == 2 and "FAIL  litellm:" in bad.stdout and "sk-wrong-key" not in bad.stdout + bad.stderr


def test_an_import_file_with_bad_rows_is_refused_whole(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    bad = {
        "users": [{"user_id": "x"}, {"user_id": "y", "email": "y@example.com", "active": "maybe"}],
        "groups": [{"name": "g", "members": ["nobody"]}],
    }
    (cli.folder / "bad.json").write_text(json.dumps(bad))
    done = cli.run("import", str(cli.folder / "bad.json"))
    assert done.returncode == 2
    assert "users[0]: email '' is missing or not an address" in done.stderr
    assert "users[1]: active 'maybe' is not true or false" in done.stderr
    assert "unknown member(s): nobody" in done.stderr


def test_csv_import(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    (cli.folder / "people.csv").write_text(
        "user_id,email,name,active,groups\nann,ann@example.com,Ann,true,llm-users;llm-admins\nben,ben@example.com,,no,\n"
    )
    imported = cli.json("import", str(cli.folder / "people.csv"), "--source", "csv")
    assert imported == {**imported, "source": "csv", "users": 2, "groups": 2}
    report = cli.json("sync")
    assert report["applied"]["by_action"] == {"create": 1} and cli.fake.users["ann"]["user_role"] == "proxy_admin"


def test_explain_says_where_each_value_came_from_and_matches_the_plan(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    cli.config["mappings"].append({"group": "llm-admins", "max_budget": 50, "budget_duration": "daily"})
    cli.write()
    (cli.folder / "people.json").write_text(json.dumps(PEOPLE))
    cli.run("import", str(cli.folder / "people.json"))
    before = cli.json("explain", "bob")
    assert before["last_applied"] is None and before["litellm"] == "absent"
    assert [c["action"] for c in before["next_change"]] == ["create"]
    plan = cli.json("plan")
    planned = next(c for c in plan["changes"] if c["user_id"] == "bob")
    assert before["next_change"][0]["after"] == planned["after"]
    assert cli.run("sync").returncode == 0
    data = cli.json("explain", "BOB@example.com")
    assert data["user_id"] == "bob" and [i["source"] for i in data["identities"]] == ["hr"]
    assert [g["name"] for g in data["groups"]] == ["llm-admins", "llm-users"]
    assert data["desired"]["role"] == {"value": "proxy_admin", "from": {"kind": "mapping", "name": "llm-admins"}}
    assert data["desired"]["max_budget"]["value"] == 50.0
    assert data["desired"]["budget_duration"] == {"value": "daily", "from": {"kind": "mapping", "name": "llm-admins"}}
    assert data["desired"]["models"]["from"] == {"kind": "mapping", "name": "llm-users"}
    assert data["last_applied"]["state"] == "active" and data["litellm"]["user_role"] == "proxy_admin"
    assert data["next_change"] == []
    text = cli.run("explain", "bob").stdout
    assert "role              proxy_admin" in text and "<- mapping llm-admins" in text
    assert "next sync: nothing to change" in text
    carol = cli.json("explain", "carol")
    assert carol["identities"][0]["active"] is False and carol["next_change"] == []
    missing = cli.run("explain", "nobody")
    assert missing.returncode == 2 and "no identity has the user_id, email or external id 'nobody'" in missing.stderr


def test_litellm_unreachable_is_one_clear_line_and_exit_1(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    (cli.folder / "people.json").write_text(json.dumps(PEOPLE))
    cli.run("import", str(cli.folder / "people.json"))
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        cli.config["litellm"]["url"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
    cli.write()
    done = cli.run("sync")
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("syncd: LiteLLM failed (/user/") and "the next run resumes" in last
    assert "Traceback" not in done.stderr and MASTER not in done.stderr, done.stderr[-2000:]


def test_plan_and_sync_show_the_team_step(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    cli.config["mappings"][1]["teams"] = ["platform"]
    cli.config["teams"] = [{"alias": "platform", "max_budget": 100, "models": ["gpt-4o"]}]
    cli.write()
    (cli.folder / "people.json").write_text(json.dumps(PEOPLE))
    cli.run("import", str(cli.folder / "people.json"))
    plan = cli.json("plan")
    assert plan["teams"]["summary"]["create_team"] == 1 and plan["teams"]["summary"]["add_member"] == 1
    text = cli.run("plan").stdout
    assert "Teams: 1 create_team, 1 add_member" in text and cli.fake.teams == {}
    done = cli.run("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    # sync prints the same plan, teams included, then what it applied of it
    assert text.splitlines()[:-1] == done.stdout.splitlines()[: len(text.splitlines()) - 1]
    assert "Applied: 1 add_member, 2 create, 1 create_team; 0 failed, 0 skipped." in done.stdout
    (team,) = cli.fake.teams.values()
    assert team["team_alias"] == "platform" and team["max_budget"] == 100
    again = cli.run("sync")
    assert "Teams: no changes (1 teams unchanged)." in again.stdout


def test_the_readme_tables_name_every_command_and_environment_variable() -> None:
    import argparse
    import re

    from syncd.cli import _parser

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    commands = readme[readme.index("## Commands\n") : readme.index("## Who gets what")]
    (subparsers,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in subparsers.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        names = [f"{name} {action}" for a in nested for action in a.choices] or [name]
        for full in names:
            assert f"| `syncd {full}" in commands, f"syncd {full} is not in the README's command table"
    source = "\n".join(p.read_text() for p in (root / "syncd").rglob("*.py"))
    read = set(re.findall(r"environ(?:\.get\(|\[)\"(SYNCD_[A-Z_]+)\"", source))
    assert {"SYNCD_CONFIG", "SYNCD_LOG_LEVEL", "SYNCD_LOG_FORMAT", "SYNCD_MIGRATIONS"} <= read
    for variable in read:
        assert f"| `{variable}` |" in commands, f"{variable} is not in the README's environment table"


def test_known_conflicts_exit_0_or_1_with_fail_on_conflict_and_a_binding_is_released_on_purpose(cli: Cli) -> None:
    upgrade(make_engine(cli.config["database"]["url"]))
    cli.fake.add_user("someone-else", user_email="ann@example.com")
    people = {"users": [{"id": "1", "user_id": "ann", "email": "ann@example.com"}], "groups": []}
    people["groups"] = [{"name": "llm-users", "members": ["1"]}]
    (cli.folder / "people.json").write_text(json.dumps(people))
    assert cli.run("import", str(cli.folder / "people.json")).returncode == 0
    done = cli.run("sync")
    assert done.returncode == 0, done.stderr
    assert "! conflict ann: the email ann@example.com is held by LiteLLM user someone-else" in done.stdout
    assert "1 known conflict(s), nothing written for them" in done.stdout
    failing = cli.run("sync", "--fail-on-conflict")
    assert failing.returncode == 1 and "(--fail-on-conflict: exit 1)" in failing.stdout
    report = cli.json("sync", "--fail-on-conflict")
    assert report["exit_code"] == 1 and [c["kind"] for c in report["conflicts"]] == ["email_taken"]
    assert cli.fake.write_calls("/user/new") == 0
    missing = cli.run("release", "nobody")
    assert missing.returncode == 1 and "no binding for user_id nobody" in missing.stderr
    people["users"][0]["email"] = "ann.b@example.com"
    (cli.folder / "people.json").write_text(json.dumps(people))
    cli.run("import", str(cli.folder / "people.json"))
    assert cli.json("sync")["applied"]["by_action"] == {"create": 1}
    released = cli.run("release", "ann")
    assert released.returncode == 0 and "released ann (was bound to import 1, active)" in released.stdout
