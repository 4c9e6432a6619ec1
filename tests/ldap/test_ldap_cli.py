"""`syncd check-config` and `syncd sync --source` against the real slapd, as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _slapd import SYNC_PASSWORD
from _tree import Tree, write_cli_config

from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

MASTER = "sk-ldap-cli"


def _syncd(path: Path, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {"BIND_PW": password, "PATH": "/usr/bin:/bin", "SYNCD_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args, "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_check_config_binds_and_counts_then_sync_provisions(tree: Tree, tmp_path: Path) -> None:
    alice, bob = tree.add_user("alice"), tree.add_user("bob")
    tree.add_group("llm", [alice, bob])
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        path = write_cli_config(tree, tmp_path, url, MASTER, group="llm")
        assert _syncd(path, "db", "upgrade", password=SYNC_PASSWORD).returncode == 0
        done = _syncd(path, "check-config", password=SYNC_PASSWORD)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "bind ok, the user filter finds 2, the group filter 1" in done.stdout
        dry = _syncd(path, "sync", "--dry-run", password=SYNC_PASSWORD)
        assert dry.returncode == 0 and "Plan: 2 create" in dry.stdout and app.state.fake.users == {}
        synced = _syncd(path, "sync", "--source", "corp", password=SYNC_PASSWORD)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert set(app.state.fake.users) == {"alice", "bob"}
        unknown = _syncd(path, "sync", "--source", "nope", password=SYNC_PASSWORD)
        assert unknown.returncode == 2 and "no LDAP source named nope (known: corp)" in unknown.stderr


def test_a_wrong_bind_password_fails_check_config_and_sync_without_showing_it(tree: Tree, tmp_path: Path) -> None:
    tree.add_group("llm", [tree.add_user("carol")])
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        path = write_cli_config(tree, tmp_path, url, MASTER, group="llm")
        assert _syncd(path, "db", "upgrade", password="not-the-password-42").returncode == 0
        checked = _syncd(path, "check-config", password="not-the-password-42")
        assert checked.returncode == 2 and "FAIL  ldap corp:" in checked.stdout
        synced = _syncd(path, "sync", password="not-the-password-42")
        assert synced.returncode == 1 and app.state.fake.users == {}
        for output in (checked.stdout + checked.stderr, synced.stdout + synced.stderr):
            assert "not-the-password-42" not in output
