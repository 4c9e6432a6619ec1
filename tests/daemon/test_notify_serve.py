"""`syncd serve` as a process tells webhooks about failed and recovered runs: a receiver that is down at first gets
the event once it is up, a receiver that hangs delays no run, and no secret is in any byte received."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import _daemon
import pytest
from _daemon import ADMIN_TOKEN, MASTER_KEY, SCIM_TOKEN, FakeLiteLLM, base_config, free_port, scim_engineer, wait_for

from syncd.testing.webhooks import WebhookReceiver


def _fake_at(tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> FakeLiteLLM:
    """The fake LiteLLM process, on the port syncd was told (it was not there when syncd started)."""
    with monkeypatch.context() as patch:
        patch.setattr(_daemon, "free_port", lambda: port)
        return FakeLiteLLM(tmp_path)


def _run_seconds(syncd: Any) -> list[float]:
    return [float(e["seconds"]) for e in syncd.log_events() if e["msg"] == "run finished"]


def test_serve_tells_a_failure_to_a_late_receiver_and_the_recovery_while_another_hangs(
    tmp_path: Path, launch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    litellm_port, receiver_port = free_port(), free_port()
    late = WebhookReceiver(receiver_port)
    hanging = WebhookReceiver(hang=True).start()
    config = base_config(f"sqlite:///{tmp_path}/syncd.db", f"http://127.0.0.1:{litellm_port}")
    config["notify"] = [
        {"url": f"http://127.0.0.1:{receiver_port}/hook/path-secret-1", "name": "late"},
        {"url": hanging.url, "name": "hanging", "timeout_s": 30},
    ]
    syncd = launch(config, args=("--migrate",))
    syncd.wait_healthy()
    fake: FakeLiteLLM | None = None
    try:
        # LiteLLM is not there: the run a SCIM write asks for fails; the receiver is down too
        scim_engineer(syncd, "alice")
        wait_for(lambda: syncd.metric("syncd_runs_total", source="all", outcome="failed") >= 1, 20, "a failed run")
        wait_for(lambda: hanging.attempts >= 1, 10, "the hanging receiver to be called")
        time.sleep(1.5)  # the late receiver refuses connections: the notification waits for a retry
        assert syncd.metric("syncd_notifications_sent_total", webhook="late", event="run_failed") == 0
        late.start()
        (failure,) = late.wait(1, timeout_s=20)
        assert failure["event"] == "run_failed" and failure["run"]["trigger"].startswith("scim")

        # LiteLLM comes up; the next SCIM write runs at once (the hanging receiver holds nothing up) and recovers
        fake = _fake_at(tmp_path, litellm_port, monkeypatch)
        started = time.monotonic()
        scim_engineer(syncd, "bob")
        wait_for(lambda: "bob@example.org" in fake.users(), 15, "bob in LiteLLM")
        assert time.monotonic() - started < 5  # not the 30 s the hanging webhook may take
        assert {"alice@example.org", "bob@example.org"} <= set(fake.users())
        events = late.wait(2, timeout_s=10)
        assert [e["event"] for e in events] == ["run_failed", "recovered"]
        assert max(_run_seconds(syncd)) < 5  # no run waited for a webhook
        assert syncd.metric("syncd_notifications_sent_total", webhook="late", event="recovered") == 1
        assert syncd.metric("syncd_notifications_sent_total", webhook="hanging", event="run_failed") == 0

        # SIGTERM: the queued notifications get a bounded wait, the process exits 0
        stopping = time.monotonic()
        syncd.signal(signal.SIGTERM)
        assert syncd.wait(30) == 0
        assert time.monotonic() - stopping < 15
    finally:
        late.stop()
        hanging.stop()
        if fake is not None:
            fake.stop()
    for body in late.bodies:
        for secret in (MASTER_KEY, SCIM_TOKEN, ADMIN_TOKEN):
            assert secret.encode() not in body
    logs = syncd.logs()
    assert "path-secret-1" not in logs and "very-secret-path-token" not in logs
    assert "notification run_failed sent to late" in logs
