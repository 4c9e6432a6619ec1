"""Held plans against a real `syncd serve`: SCIM deactivations paced at 1.5 a second are held by the guard's window,
a new hire is provisioned while they wait, and an admin approves the held plan on the status page in the real
headless Chromium (driven over the DevTools protocol: login form, note, Approve button), after which the daemon
applies exactly that plan."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _daemon import ADMIN_TOKEN, GROUP_SCHEMA, PATCH_SCHEMA, base_config, free_port, scim_user, wait_for

from syncd.store import make_engine
from syncd.store.repository import SyncStore

STAFF = 20  # max_deactivation_ratio 0.10: two deactivations an hour


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol (a websocket)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        port = free_port()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
        flags += ["--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
        flags += [f"--remote-debugging-port={port}", "--remote-allow-origins=*", "--window-size=1200,1400"]
        self.process = subprocess.Popen([chromium, *flags, "about:blank"], stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/json/version", timeout=1).status_code == 200, 30, "Chromium's DevTools")
        pages = [t for t in httpx.get(f"{base}/json/list", timeout=5).json() if t["type"] == "page"]
        self.page_url = pages[0]["webSocketDebuggerUrl"]
        self.ws: Any = None
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return dict(message.get("result") or {})

    def wait_load(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("method") == "Page.loadEventFired":
                return
        pytest.fail("the page did not load")

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def submit(self, expression: str) -> None:
        """Run a script that submits a form, and wait for the page it leads to."""
        self.js(expression)
        self.wait_load()

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_load()

    def screenshot(self, png: Path) -> None:
        import base64

        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from websockets.sync.client import connect

    started = Browser(chromium, tmp_path / "chromium-profile")
    try:
        with connect(started.page_url, max_size=None) as ws:
            started.ws = ws
            started.call("Page.enable")
            yield started
    finally:
        started.close()


def _staff(syncd: Any) -> dict[str, str]:
    """STAFF SCIM users in the group `engineers`: SCIM id -> user_id."""
    ids = {}
    for i in range(STAFF):
        answer = syncd.scim("POST", "/Users", scim_user(f"p{i:02}"))
        assert answer.status_code == 201, answer.text
        ids[answer.json()["id"]] = answer.json()["userName"]
    members = [{"value": scim_id} for scim_id in ids]
    group = {"schemas": [GROUP_SCHEMA], "displayName": "engineers", "members": members}
    assert syncd.scim("POST", "/Groups", group).status_code == 201
    return ids


def _suspended(fake: Any) -> set[str]:
    return {u for u, data in fake.users().items() if data["metadata"].get("scim_active") is False}


def _open_plans(syncd: Any) -> list[dict[str, Any]]:
    status = syncd.get("/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    return list(status["held_plans"])


def test_paced_deactivations_are_held_a_new_hire_goes_through_and_the_page_approves(
    tmp_path: Path, fake: Any, launch: Any, browser: Browser, output_dir: Path
) -> None:
    database = f"sqlite:///{tmp_path}/syncd.db"
    syncd = launch(base_config(database, fake.url), args=("--migrate",))
    syncd.wait_healthy()
    staff = _staff(syncd)
    wait_for(lambda: set(staff.values()) <= set(fake.users()), 30, "the staff in LiteLLM")

    # eight leave, one every 2/3 s: never more than one in a run, so only the window can hold them
    leaving = list(staff.items())[:8]
    for scim_id, _ in leaving:
        patch = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": False}}]}
        assert syncd.scim("PATCH", f"/Users/{scim_id}", patch).status_code == 200
        time.sleep(1 / 1.5)
    hire = syncd.scim("POST", "/Users", scim_user("new-hire")).json()
    group_id = syncd.scim("GET", '/Groups?filter=displayName eq "engineers"').json()["Resources"][0]["id"]
    add = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": hire["id"]}]}],
    }
    assert syncd.scim("PATCH", f"/Groups/{group_id}", add).status_code in (200, 204)

    wait_for(lambda: hire["userName"] in fake.users(), 20, "the new hire provisioned while deactivations are held")
    plans = wait_for(
        lambda: [p for p in _open_plans(syncd) if len(p["deactivations"]) == 6], 30, "one held plan of the other six"
    )
    assert len(_open_plans(syncd)) == 1
    assert len(_suspended(fake)) == 2, "two of twenty may leave in an hour"
    plan = plans[0]
    assert plan["status"] == "held" and "over the limit of 1" in plan["reason"]  # 2 of 20 gone: 10% of 18 is 1
    assert all("disabled in okta" in c["reason"] for c in plan["deactivations"])

    # the admin logs in on the page, reads the held plan, writes a note and presses Approve
    browser.open(f"{syncd.url}/")
    browser.submit(
        f"document.querySelector('input[name=token]').value = {json.dumps(ADMIN_TOKEN)};"
        "document.querySelector('form[action=\"/login\"]').submit()"
    )
    shown = browser.js(f"document.querySelector('#held-plan-{plan['id']}').innerText")
    assert all(c["user_id"] in shown for c in plan["deactivations"])
    browser.screenshot(output_dir / "held-plan.png")
    browser.submit(
        f"document.querySelector('#held-plan-{plan['id']} input[name=note]').value = 'offboarding wave 3, HR ok';"
        f"document.querySelector('#held-plan-{plan['id']} button[value=approve]').click()"
    )
    assert "Log in" not in browser.js("document.body.innerText")

    wait_for(lambda: len(_suspended(fake)) == 8, 20, "the approved plan applied")
    assert {c["user_id"] for c in plan["deactivations"]} <= _suspended(fake)
    assert hire["userName"] in fake.users() and hire["userName"] not in _suspended(fake)
    store = SyncStore(make_engine(database))
    applied = store.held_plan(plan["id"])
    assert applied is not None and applied.status == "applied" and applied.decided_by == "admin (status page)"
    audit = store.audit_entries(f"held-plan:{plan['id']}")
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("approve", "admin (status page)", "offboarding wave 3, HR ok")
    ]
    store.engine.dispose()
    assert _open_plans(syncd) == []
