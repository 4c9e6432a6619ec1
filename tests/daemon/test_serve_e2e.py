"""`syncd serve` as a process against a real slapd and the fake LiteLLM: schedules, SCIM, metrics, logs, SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _daemon import (
    ADMIN_TOKEN,
    MASTER_KEY,
    SCIM_TOKEN,
    SYNC_PASSWORD,
    base_config,
    ldap_source,
    oauth_token,
    scim_engineer,
    wait_for,
    with_directory,
)

from syncd.secret_hash import hash_secret

OAUTH_KEY = "serve-e2e-oauth-signing-key-0123456789abcdef"
OAUTH_SECRET = "serve-e2e-okta-client-secret-0123456789abcdef"


@pytest.mark.parametrize("auth", ["token", "oauth"])
def test_scheduled_pulls_and_scim_writes_reach_litellm(
    tmp_path: Path, fake: Any, launch: Any, slapd: Any, directory: Any, auth: str
) -> None:
    alice = directory.add_user("alice")
    group = directory.add_group("engineers", [alice])
    config = base_config(f"sqlite:///{tmp_path}/syncd.db", fake.url)
    with_directory(config, ldap_source(slapd, directory.base, full="1h", incremental="2s"))
    if auth == "oauth":  # the SCIM writes below use an access token of okta's OAuth client (issue 17)
        config["scim"]["oauth"] = {"signing_key": OAUTH_KEY}
        client = {"client_id": "okta-app", "source": "okta", "secret_hashes": [hash_secret(OAUTH_SECRET)]}
        config["scim"]["oauth_clients"] = [client]
    syncd = launch(config, args=("--migrate",))
    syncd.wait_healthy()
    if auth == "oauth":
        issued = oauth_token(syncd, "okta-app", OAUTH_SECRET)
        assert issued.status_code == 200, issued.text
        syncd.bearer = issued.json()["access_token"]

    # the first full pull is overdue at start: it runs at once and alice reaches LiteLLM
    wait_for(lambda: "alice" in fake.users(), 15, "alice in LiteLLM after the first full pull")
    assert fake.users()["alice"]["models"] == ["gpt-4o"]
    pulls = syncd.metric("syncd_pulls_total", source="corp", mode="full", outcome="success")
    assert pulls == 1

    # a change in the directory arrives through the scheduled incremental pull (every 2 s)
    directory.add_member(group, directory.add_user("bob"))
    wait_for(lambda: "bob" in fake.users(), 15, "bob in LiteLLM after an incremental pull")
    assert syncd.metric("syncd_pulls_total", source="corp", mode="incremental", outcome="success") >= 1

    # a SCIM write reaches LiteLLM within the debounce and a run
    started = time.monotonic()
    carol = scim_engineer(syncd, "carol")
    wait_for(lambda: carol in fake.users(), 10, "the SCIM user in LiteLLM")
    assert time.monotonic() - started < 5
    assert syncd.metric("syncd_scim_to_litellm_seconds_count") >= 1
    assert syncd.metric("syncd_scim_requests_total", method="POST", resource="Users", status="201") == 1
    assert syncd.metric("syncd_changes_total", action="create", result="done") >= 3
    assert syncd.metric("syncd_runs_total", source="corp", outcome="success") >= 1
    assert syncd.metric("syncd_last_success_timestamp_seconds", source="corp") > time.time() - 60
    assert syncd.metric("syncd_managed_users", state="active") == 3
    assert syncd.metric("syncd_leader") == 1
    assert syncd.metric("syncd_litellm_calls_total", endpoint="/user/new", status="200") >= 3

    _check_status_and_readiness(syncd)

    syncd.signal(signal.SIGTERM)
    assert syncd.wait(30) == 0
    _check_logs(syncd)


def _check_status_and_readiness(syncd: Any) -> None:
    assert syncd.get("/readyz").json() == {"status": "ready"}
    assert syncd.get("/status").status_code == 401
    assert syncd.get("/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    status = syncd.get("/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert status["runs"] and status["runs"][0]["status"] == "success"
    assert status["changes"]["pending"] == 0
    assert [s["source"] for s in status["sources"]] == ["corp"]
    assert status["replica"]["leader"] is True
    page = syncd.get("/").text
    assert "Last runs" in page and "<svg" in page and "alice" not in page


def _check_logs(syncd: Any) -> None:
    events = syncd.log_events()  # every line is one JSON event
    runs = [e for e in events if e["msg"] == "run finished"]
    assert runs and all("run_id" in e and "trigger" in e for e in runs)
    assert any(e.get("source") == "corp" and e["msg"] == "scheduled pull done" for e in events)
    text = syncd.logs()
    for secret in (MASTER_KEY, SCIM_TOKEN, ADMIN_TOKEN, SYNC_PASSWORD, OAUTH_KEY, OAUTH_SECRET, syncd.bearer):
        assert secret not in text
    assert json.loads(text.splitlines()[-1])["msg"] == "syncd serve stopped"
