"""`syncd sync` tells the webhooks of `notify:` what its runs did: real processes, the fake LiteLLM over HTTP,
a loopback webhook receiver, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from syncd.store import make_engine, upgrade
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm
from syncd.testing.webhooks import WebhookReceiver

MASTER = "sk-notify-sync-master-5d1f0a"


class Sync:
    """`python -m syncd` with a config whose `notify:` points at loopback receivers; people from an import file."""

    def __init__(self, folder: Path, database_url: str, litellm_url: str, webhooks: list[dict[str, Any]]) -> None:
        self.folder, self.litellm_url = folder, litellm_url
        self.config: dict[str, Any] = {
            "database": {"url": database_url},
            "litellm": {"url": litellm_url, "master_key": "${TEST_MASTER_KEY}", "max_retries": 0},
            "mappings": [{"group": "llm-users", "models": ["gpt-4o"]}],
            "policy": {"max_deactivations": 3},
            "notify": webhooks,
        }
        self.people: list[str] = []
        upgrade(make_engine(database_url))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        (self.folder / "syncd.yaml").write_text(yaml.safe_dump(self.config))
        env = {"TEST_MASTER_KEY": MASTER, "PATH": "/usr/bin:/bin", "SYNCD_LOG_FORMAT": "text"}
        command = [sys.executable, "-m", "syncd", *args, "--config", str(self.folder / "syncd.yaml")]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=self.folder)

    def staff(self, *user_ids: str) -> None:
        """Record these people (and only them) as the `hr` source, all in llm-users."""
        users = [{"id": u, "user_id": u, "email": f"{u}@example.com"} for u in user_ids]
        document = {"source": "hr", "users": users, "groups": [{"name": "llm-users", "members": list(user_ids)}]}
        (self.folder / "people.json").write_text(json.dumps(document))
        done = self.run("import", str(self.folder / "people.json"))
        assert done.returncode == 0, done.stderr

    def sync(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = self.run("sync", *args)
        assert done.returncode == expect, done.stdout + done.stderr
        return done


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[tuple[str, Any]]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        yield url, app.state.fake


def _kinds(receiver: WebhookReceiver) -> list[str]:
    return [event["event"] for event in receiver.events()]


def test_sync_tells_failures_recovery_conflicts_drift_and_held_plans_once_each(
    tmp_path: Path, database_url: str, fake: tuple[str, Any]
) -> None:
    url, state = fake
    with WebhookReceiver() as everything, WebhookReceiver() as slack:
        sync = Sync(
            tmp_path,
            database_url,
            url,
            [{"url": everything.url}, {"url": slack.url, "format": "slack", "events": ["held_plan", "run_failed"]}],
        )
        staff = [f"u{i}" for i in range(12)]
        sync.staff(*staff)
        sync.sync()
        assert everything.events() == []  # a first sync: nothing failed, held, conflicting or drifted

        # LiteLLM away while a new hire waits: one run_failed, not one per failed run; then recovered
        sync.staff(*staff, "hire")
        sync.config["litellm"]["url"] = f"http://127.0.0.1:{_closed_port()}"
        failed = sync.sync(expect=1)
        sync.sync(expect=1)
        assert _kinds(everything) == ["run_failed"], failed.stderr
        (failure,) = everything.events()
        assert failure["run"]["status"] == "failed" and "LiteLLM" in failure["failure"]["error"]
        assert slack.events()[0]["text"].startswith("syncd: a run (cli) failed: ")
        sync.config["litellm"]["url"] = url
        sync.sync()
        assert _kinds(everything) == ["run_failed", "recovered"] and "hire" in state.users

        # a conflict: the email of a new person is held by a LiteLLM user syncd does not manage; told once
        state.add_user("someone-else", user_email="newcomer@example.com")
        sync.staff(*staff, "hire", "newcomer")
        sync.sync()
        sync.sync()
        assert _kinds(everything)[2:] == ["conflict"]
        conflict = everything.events()[2]
        assert conflict["count"] == 1 and conflict["conflicts"][0]["user_id"] == "newcomer"
        assert conflict["conflicts"][0]["kind"] == "email_taken" and conflict["run"]["trigger"] == "cli"

        # a change made in LiteLLM by hand, undone by the drift check
        answer = httpx.post(
            f"{url}/user/update",
            json={"user_id": "u3", "models": ["gpt-3.5-turbo"]},
            headers={"Authorization": f"Bearer {MASTER}"},
        )
        assert answer.status_code == 200
        sync.sync("--drift-check")
        drift = everything.events()[-1]
        assert drift["event"] == "drift_corrected" and drift["drift"]["count"] == 1
        assert drift["drift"]["changes"][0] == {
            "user_id": "u3",
            "action": "update",
            "reason": "drift in LiteLLM corrected",
        }

        # five leave at once: held (exit 3), told once while the same plan stays held
        sync.staff(*staff[5:], "hire", "newcomer")
        sync.sync(expect=3)
        sync.sync(expect=3)
        held = everything.events()[-1]
        assert _kinds(everything)[-2:] == ["drift_corrected", "held_plan"]
        assert held["held"]["deactivations"] == 5 and "5 deactivations planned" in held["held"]["reason"]
        assert [e["text"][:40] for e in slack.events()][1].startswith("syncd: run ") and "held" in slack.events()[1][
            "text"
        ]
        assert len(slack.events()) == 2  # run_failed and held_plan only, as it asked

        # a dry run tells nothing
        sync.sync("--dry-run", "--allow-mass-deactivation")
        assert len(everything.events()) == 5
        for body in everything.bodies + slack.bodies:
            assert MASTER.encode() not in body


def test_a_hanging_receiver_delays_neither_the_run_nor_the_exit_past_the_flush_bound(
    tmp_path: Path, fake: tuple[str, Any]
) -> None:
    url, _state = fake
    with WebhookReceiver(hang=True) as hanging:
        sync = Sync(tmp_path, f"sqlite:///{tmp_path}/syncd.db", url, [{"url": hanging.url, "timeout_s": 30}])
        sync.staff("a", "b", "c")
        sync.sync()
        sync.staff("b", "c", "d")
        sync.config["litellm"]["url"] = f"http://127.0.0.1:{_closed_port()}"
        started = time.monotonic()
        done = sync.sync("--json", expect=1)
        elapsed = time.monotonic() - started
        assert hanging.attempts == 1  # the run_failed notification reached the receiver, which never answered
        assert elapsed < 5.0 + 4.0, elapsed  # the flush waits at most 5 s; the rest is the process and the run
        assert "not delivered within 5 s" in done.stderr and hanging.url not in done.stderr


def test_check_config_lists_the_webhooks_without_sending_or_showing_their_urls(
    tmp_path: Path, fake: tuple[str, Any]
) -> None:
    url, _state = fake
    with WebhookReceiver() as receiver:
        webhooks = [
            {"url": receiver.url, "events": ["held_plan"]},
            {"url": "http://hooks.example.org/services/T1/B2/plain-secret", "name": "plain"},
            {"url": ""},
        ]
        sync = Sync(tmp_path, f"sqlite:///{tmp_path}/syncd.db", url, webhooks)
        done = sync.run("check-config")
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert f"ok    notify[0] (127.0.0.1:{receiver.port}): json payloads for held_plan" in "\n".join(lines)
        assert any(line.startswith("warn  notify[1] (plain): plain http") for line in lines)
        assert "ok    notify[2] (off): off: no url" in lines
        assert "plain-secret" not in done.stdout + done.stderr and "very-secret" not in done.stdout
        assert receiver.attempts == 0
