"""Webhook delivery (syncd.notify) against a real HTTP receiver on loopback: formats, retries, hangs, TLS, secrets."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.logs import redact
from syncd.metrics import Metrics
from syncd.notify import Event, Notifier, payload
from syncd.settings import ConfigError, settings_from_dict
from syncd.settings.notify import WebhookSettings
from syncd.testing.webhooks import WebhookReceiver

SECRET = "sk-notify-test-master-key-7c1e"


def _webhook(url: str, **fields: Any) -> WebhookSettings:
    return WebhookSettings.model_validate({"url": url, **fields})


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_errors_name_the_problem_and_never_the_url() -> None:
    secret_path = "https://hooks.slack.com/services/T1/B2/xoxb-secret-path"
    with pytest.raises(ConfigError) as bad:
        settings_from_dict(
            {
                "notify": [
                    {"url": "ftp://files.example.org/xoxb-secret-path", "events": ["held_plan", "held"]},
                    {"url": secret_path, "events": []},
                    {"url": "https://hooks.example.org:99999/xoxb-secret-path"},
                    {"url": secret_path, "format": "teams"},
                ]
            }
        )
    problems = bad.value.problems
    assert "notify[0].url: must be an http:// or https:// URL (the scheme is 'ftp')" in problems
    assert any(p.startswith("notify[0].events[1]: 'held' is not one of: 'held_plan'") for p in problems)
    assert any(p.startswith("notify[1].events: names no event") for p in problems)
    assert "notify[2].url: the port of host hooks.example.org is not a number in 0..65535" in problems
    assert any(p.startswith("notify[3].format: 'teams' is not one of") for p in problems)
    assert "xoxb-secret-path" not in str(bad.value)


def test_an_empty_url_turns_the_webhook_off_and_the_host_names_it() -> None:
    settings = settings_from_dict(
        {"notify": [{"url": ""}, {"url": "https://hooks.slack.com/services/T/B/secret", "events": ["conflict"]}]}
    )
    off, slack = settings.notify
    assert not off.enabled and slack.enabled and slack.label == "hooks.slack.com"
    assert slack.events == ["conflict"] and "secret" not in repr(settings)
    assert Notifier.from_settings([off]) is None


def test_json_and_slack_payloads() -> None:
    event = Event("run_failed", "run 4 failed: <b> & c", {"run": {"id": 4}}, at=0.0)
    document = json.loads(payload(event, "json"))
    assert document["event"] == "run_failed" and document["at"] == "1970-01-01T00:00:00Z"
    assert document["run"] == {"id": 4} and document["text"] == "run 4 failed: <b> & c"
    assert json.loads(payload(event, "slack")) == {"text": "syncd: run 4 failed: &lt;b&gt; &amp; c"}


def test_a_registered_secret_never_leaves_in_a_payload() -> None:
    redact(SECRET)
    event = Event("run_failed", f"LiteLLM said: bad key {SECRET}", {"errors": [{"error": f"Bearer {SECRET}"}]})
    for form in ("json", "slack"):
        body = payload(event, form)
        assert SECRET.encode() not in body and b"***" in body


def test_events_reach_each_webhook_in_its_format_and_only_those_it_asked_for() -> None:
    metrics = Metrics()
    with WebhookReceiver() as plain, WebhookReceiver() as slack:
        webhooks = [
            _webhook(plain.url, name="ops"),
            _webhook(slack.url, format="slack", events=["held_plan"]),
        ]
        notifier = Notifier(webhooks, metrics=metrics)
        notifier.start()
        notifier.send(Event("run_failed", "run 1 failed"))
        notifier.send(Event("held_plan", "run 2 is held"))
        assert notifier.close(10) == 0
        assert [e["event"] for e in plain.events()] == ["run_failed", "held_plan"]
        assert slack.events() == [{"text": "syncd: run 2 is held"}]
        assert plain.paths[0] == "/hooks/T000/B000/very-secret-path-token"
    assert _sample(metrics, "syncd_notifications_sent_total", webhook="ops", event="run_failed") == 1
    assert _sample(metrics, "syncd_notifications_sent_total", webhook=f"127.0.0.1:{slack.port}", event="held_plan") == 1


def test_a_receiver_down_at_first_gets_the_event_once_it_is_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncd")
    port = _free_port()
    metrics = Metrics()
    receiver = WebhookReceiver(port, statuses=[503])
    notifier = Notifier([_webhook(f"http://127.0.0.1:{port}/hook/secret-part")], metrics=metrics, backoff_s=0.2)
    notifier.start()
    started = time.monotonic()
    notifier.send(Event("run_failed", "run 1 failed"))
    assert time.monotonic() - started < 0.05  # send only queues
    time.sleep(0.5)  # two refused connections
    with receiver.start():
        events = receiver.wait(1, timeout_s=10)
        assert [e["event"] for e in events] == ["run_failed"]
        assert receiver.attempts == 2  # a 503 first, then accepted
        notifier.close(5)
    labels = {"webhook": f"127.0.0.1:{port}", "event": "run_failed"}
    assert _sample(metrics, "syncd_notifications_sent_total", **labels) == 1
    assert _sample(metrics, "syncd_notifications_failed_total", **labels, reason="no_answer") == 0
    assert "secret-part" not in caplog.text and "retry in" in caplog.text


def test_a_refusal_is_final_and_a_receiver_failing_every_time_is_given_up_and_counted() -> None:
    metrics = Metrics()
    with WebhookReceiver(statuses=[400]) as refusing, WebhookReceiver(statuses=[500] * 3) as failing:
        notifier = Notifier(
            [_webhook(refusing.url, name="refusing"), _webhook(failing.url, name="failing", max_attempts=3)],
            metrics=metrics,
            backoff_s=0.05,
        )
        notifier.start()
        notifier.send(Event("conflict", "a conflict"))
        notifier.close(10)
        assert refusing.attempts == 1 and failing.attempts == 3
        assert refusing.bodies == [] and failing.bodies == []
    failed = "syncd_notifications_failed_total"
    assert _sample(metrics, failed, webhook="refusing", event="conflict", reason="http_4xx") == 1
    assert _sample(metrics, failed, webhook="failing", event="conflict", reason="http_5xx") == 1


def test_a_hanging_receiver_delays_nobody_and_close_is_bounded() -> None:
    metrics = Metrics()
    with WebhookReceiver(hang=True) as hanging, WebhookReceiver() as healthy:
        notifier = Notifier(
            [_webhook(hanging.url, name="hanging", timeout_s=3), _webhook(healthy.url, name="healthy")],
            metrics=metrics,
        )
        notifier.start()
        started = time.monotonic()
        for n in range(50):
            notifier.send(Event("run_failed", f"run {n} failed"))
        assert time.monotonic() - started < 0.1
        assert len(healthy.wait(50, timeout_s=10)) == 50  # the other webhook is not held up
        assert hanging.attempts == 1 and hanging.bodies == []
        started = time.monotonic()
        left = notifier.close(1.0)
        assert time.monotonic() - started < 1.5 and left == 50


def test_a_full_queue_drops_and_counts_instead_of_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("syncd.notify._QUEUE_SIZE", 3)
    metrics = Metrics()
    with WebhookReceiver(hang=True) as hanging:
        notifier = Notifier([_webhook(hanging.url, name="slow", timeout_s=2)], metrics=metrics)
        notifier.start()
        for n in range(10):
            notifier.send(Event("conflict", f"conflict {n}"))
        dropped = _sample(
            metrics, "syncd_notifications_failed_total", webhook="slow", event="conflict", reason="queue_full"
        )
        assert 6 <= dropped <= 7  # one taken by the thread (maybe), three waiting
        notifier.close(0.1)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "hook.key", folder / "hook.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_is_verified_and_a_private_ca_is_trusted_through_ca_file(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    metrics = Metrics()
    with WebhookReceiver(cert=(cert, key)) as receiver:
        untrusted = _webhook(receiver.url, name="untrusted", max_attempts=1)
        trusted = _webhook(receiver.url, name="trusted", ca_file=str(cert))
        notifier = Notifier([untrusted, trusted], metrics=metrics)
        notifier.start()
        notifier.send(Event("recovered", "run 9 succeeded"))
        notifier.close(10)
        assert [e["event"] for e in receiver.events()] == ["recovered"]
    failed = "syncd_notifications_failed_total"
    assert _sample(metrics, failed, webhook="untrusted", event="recovered", reason="no_answer") == 1
    assert _sample(metrics, "syncd_notifications_sent_total", webhook="trusted", event="recovered") == 1


def test_the_runbook_covers_every_alert_and_every_notification() -> None:
    import yaml

    from syncd.settings.notify import EVENTS

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    text = (deploy / "README.md").read_text()
    runbook = text[text.index("## Runbook: alerts and notifications") :]
    runbook = runbook[: runbook.index("\n## ", 5)]
    rules = yaml.safe_load((deploy / "prometheus" / "syncd-alerts.yml").read_text())
    alerts = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    assert "SyncdNotificationsFailing" in alerts
    for name in [*alerts, *EVENTS]:
        assert f"| `{name}` |" in runbook, f"{name} has no row in deploy/README.md's runbook"
