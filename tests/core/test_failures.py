"""Every expected failure of a `syncd` process is one line on stderr and an exit code, in JSON and text log modes.

LiteLLM, an LDAP server or the database unreachable, a bad command-line value: no traceback (unless --debug), one
line saying what failed, the documented exit status. Also: check-config creates no SQLite file, explain --offline
needs no secret.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.store import make_engine, upgrade
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

MASTER = "sk-failures-master-5a4b3c"
BIND_PASSWORD = "bind-secret-77e1"
PEOPLE = {
    "source": "hr",
    "users": [{"id": "1", "user_id": "alice", "email": "alice@example.com"}],
    "groups": [{"id": "g1", "name": "llm-users", "members": ["1"]}],
}
_TEXT_LINE = re.compile(r"^(debug|info|warning|error|critical) +\S|^syncd: \S")


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def error_lines(stderr: str, log_format: str) -> list[str]:
    """The lines of stderr that report a failure; every line must be a whole event (no traceback, no continuation)."""
    assert "Traceback" not in stderr, stderr
    found = []
    for line in stderr.splitlines():
        if line.startswith("syncd: "):
            found.append(line)
        elif log_format == "json":
            event = json.loads(line)  # a line that is not a whole JSON event fails here
            if event["level"] in ("error", "critical"):
                found.append(line)
        else:
            assert _TEXT_LINE.match(line), f"not a whole log line: {line!r}"
            if line.startswith(("error", "critical")):
                found.append(line)
    return found


class Syncd:
    """`python -m syncd` with a config file written from `config`, in a folder of its own."""

    def __init__(self, folder: Path, config: dict[str, Any], log_format: str) -> None:
        self.folder, self.config, self.log_format = folder, config, log_format

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        (self.folder / "syncd.yaml").write_text(yaml.safe_dump(self.config))
        base = {
            "PATH": "/usr/bin:/bin",
            "TEST_MASTER_KEY": MASTER,
            "TEST_BIND_PASSWORD": BIND_PASSWORD,
            "SYNCD_LOG_FORMAT": self.log_format,
            "SYNCD_CONFIG": str(self.folder / "syncd.yaml"),
        }
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args],
            capture_output=True,
            text=True,
            env=base if env is None else {**base, **env},
            timeout=120,
            cwd=self.folder,
        )

    def fails_in_one_line(self, *args: str, code: int, says: str) -> str:
        """Run; assert the exit status and exactly one line reporting the failure, containing `says`."""
        done = self.run(*args)
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        lines = error_lines(done.stderr, self.log_format)
        assert len(lines) == 1, done.stderr
        assert says in lines[0], lines[0]
        assert MASTER not in done.stdout + done.stderr and BIND_PASSWORD not in done.stdout + done.stderr
        return lines[0]


@pytest.fixture(params=["json", "text"])
def log_format(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_url() -> Iterator[str]:
    with serve_in_thread(create_fake_litellm(MASTER)) as url:
        yield url


@pytest.fixture
def syncd(tmp_path: Path, fake_url: str, log_format: str) -> Syncd:
    """A SQLite store at head holding one imported person; LiteLLM answering."""
    url = f"sqlite:///{tmp_path}/syncd.db"
    upgrade(make_engine(url))
    config = {
        "database": {"url": url},
        "litellm": {"url": fake_url, "master_key": "${TEST_MASTER_KEY}", "max_retries": 0, "timeout_s": 2},
        "mappings": [{"group": "llm-users", "models": ["gpt-4o"]}],
    }
    cli = Syncd(tmp_path, config, log_format)
    (tmp_path / "people.json").write_text(json.dumps(PEOPLE))
    assert cli.run("import", str(tmp_path / "people.json")).returncode == 0
    return cli


def test_litellm_unreachable_is_one_line_for_sync_plan_and_explain(syncd: Syncd) -> None:
    syncd.config["litellm"]["url"] = f"http://127.0.0.1:{closed_port()}"
    line = syncd.fails_in_one_line("sync", code=1, says="LiteLLM failed (/user/")
    assert "the next run resumes" in line
    line = syncd.fails_in_one_line("plan", code=1, says="LiteLLM failed (/user/")
    assert "next run" not in line  # plan changes nothing: there is nothing to resume
    syncd.fails_in_one_line("explain", "alice", code=1, says="LiteLLM failed")


def test_debug_shows_the_traceback(syncd: Syncd) -> None:
    syncd.config["litellm"]["url"] = f"http://127.0.0.1:{closed_port()}"
    done = syncd.run("--debug", "plan")
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("syncd: LiteLLM failed")


def test_an_unreachable_ldap_server_is_one_line_and_the_run_fails(syncd: Syncd) -> None:
    syncd.config["ldap"] = [
        {
            "name": "corp",
            "url": f"ldap://127.0.0.1:{closed_port()}",
            "bind_dn": "cn=syncd,dc=example,dc=org",
            "bind_password": "${TEST_BIND_PASSWORD}",
            "connect_timeout_s": 2,
            "users": {"base_dn": "ou=people,dc=example,dc=org"},
            "groups": {"base_dn": "ou=groups,dc=example,dc=org"},
        }
    ]
    syncd.fails_in_one_line("sync", code=1, says="LDAP pull incomplete, nothing recorded: LDAP source corp")
    syncd.fails_in_one_line("plan", code=1, says="LDAP source corp: cannot connect")
    done = syncd.run("plan")
    assert "problem: source corp: pull failed" in done.stdout  # the plan is printed all the same


def test_an_unreachable_database_is_one_line(syncd: Syncd) -> None:
    syncd.config["database"]["url"] = f"postgresql+psycopg://syncd:pw@127.0.0.1:{closed_port()}/syncd"
    syncd.fails_in_one_line("sync", code=1, says="cannot reach the database: OperationalError")
    syncd.fails_in_one_line("db", "upgrade", code=1, says="the database failed: OperationalError")
    done = syncd.run("check-config")
    assert done.returncode == 2 and "FAIL  database: cannot connect" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["plan", "--log-level", "bogus"], {}, "argument --log-level: invalid choice: 'BOGUS'"),
        (["plan"], {"SYNCD_LOG_LEVEL": "loud"}, "SYNCD_LOG_LEVEL='loud' is not one of"),
        (["plan"], {"SYNCD_LOG_FORMAT": "xml"}, "SYNCD_LOG_FORMAT='xml' is not json or text"),
        (["sync", "--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["serve", "--port", "eighty"], {}, "argument --port: invalid int value: 'eighty'"),
        (["frobnicate"], {}, "argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_a_bad_command_line_value_exits_2_in_one_line(
    syncd: Syncd, args: list[str], env: dict[str, str], says: str
) -> None:
    done = syncd.run(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("syncd: ") and says in done.stderr, done.stderr
    assert done.stdout == ""


def test_check_config_leaves_no_database_file_behind(tmp_path: Path, fake_url: str) -> None:
    config = {"litellm": {"url": fake_url, "master_key": "${TEST_MASTER_KEY}"}}  # database.url: the default
    cli = Syncd(tmp_path, config, "json")
    done = cli.run("check-config")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "FAIL  database: syncd.db does not exist yet: run `syncd db upgrade`" in done.stdout
    assert "ok    litellm:" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syncd.yaml"]
    plan = cli.run("plan")
    assert plan.returncode == 2 and "syncd.db does not exist yet" in plan.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syncd.yaml"]
    assert cli.run("db", "upgrade").returncode == 0 and (tmp_path / "syncd.db").exists()
    again = cli.run("check-config")
    assert again.returncode == 0 and "ok    database: reachable, schema at" in again.stdout


def test_explain_offline_and_db_upgrade_need_no_secret(syncd: Syncd) -> None:
    syncd.config["ldap"] = [
        {
            "name": "corp",
            "url": "ldap://127.0.0.1:1",
            "bind_password": "${UNSET_BIND_PASSWORD}",
            "users": {"base_dn": "ou=people,dc=example,dc=org"},
        }
    ]
    syncd.config["litellm"]["master_key"] = "${UNSET_MASTER_KEY}"
    syncd.config["scim"] = {"enabled": True, "tokens": [{"name": "okta", "token": "${UNSET_SCIM_TOKEN}"}]}
    syncd.config["mappings"][0]["sources"] = ["corp"]  # with a tenant and a directory, a name says whose group
    offline = syncd.run("explain", "alice", "--offline", "--json")
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["user_id"] == "alice"
    assert syncd.run("db", "upgrade").returncode == 0
    online = syncd.run("explain", "alice")
    assert online.returncode == 2
    for name in ("UNSET_MASTER_KEY", "UNSET_BIND_PASSWORD", "UNSET_SCIM_TOKEN"):
        assert f"environment variable {name} is not set" in online.stderr
