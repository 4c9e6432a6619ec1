"""The app in-process: readiness, the admin token of /status and the page, limits, metrics names; the status page
rendered in headless Chromium with a screenshot kept in the test output."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import ADMIN_TOKEN, MASTER_KEY
from fastapi.testclient import TestClient

from syncd.app import ADMIN_COOKIE, create_app
from syncd.metrics import Metrics
from syncd.model import Group, Identity, Snapshot
from syncd.reconcile import ReconcileOptions, Reconciler
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FaultPlan, create_fake_litellm

#: the status page's colours (syncd/status.py): the chart's marks, the page background, the text
CHART = {"done": "32a467", "failed": "d92d20", "held": "f79009"}
BACKGROUND, TEXT = "f6f7f9", "1d2330"


def _snapshot(count: int) -> Snapshot:
    people = [
        Identity("hr", f"e{i}", f"person{i:02d}", f"person{i:02d}@example.org", f"Person {i}") for i in range(count)
    ]
    group = Group("hr", "g1", "engineers", members=frozenset(p.external_id for p in people))
    return Snapshot("hr", identities=people, groups=[group])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A migrated SQLite store with a history of runs (successes, failures, a held plan) against the fake."""
    fake_app = create_fake_litellm(MASTER_KEY)
    with serve_in_thread(fake_app) as fake_url:
        settings = settings_from_dict(
            {
                "database": {"url": f"sqlite:///{tmp_path}/syncd.db"},
                "litellm": {"url": fake_url, "master_key": MASTER_KEY, "max_retries": 0},
                "server": {"admin_token": ADMIN_TOKEN, "ready_max_sync_age": "1h", "max_body_bytes": 2048},
                "mappings": [{"group": "engineers", "models": ["gpt-4o"]}],
                "policy": {"max_deactivations": 3},
            }
        )
        engine = make_engine(settings.database.url)
        upgrade(engine)
        store, metrics = SyncStore(engine), Metrics()
        _history(settings, store, metrics, fake_app.state.fake)
        yield {"settings": settings, "store": store, "engine": engine, "metrics": metrics}
        engine.dispose()


def _history(settings: Any, store: SyncStore, metrics: Metrics, fake: Any) -> None:
    from syncd.litellm import LiteLLMClient

    with LiteLLMClient(settings.litellm.url, MASTER_KEY, max_retries=0, on_call=metrics.record_litellm_call) as client:
        reconciler = Reconciler(settings, store, client, metrics=metrics)
        for count, faults in ((8, None), (14, None), (20, FaultPlan(seed=3, error_rate=0.5, paths=("/user/new",)))):
            fake.faults = faults or FaultPlan()
            store.record_snapshot(_snapshot(count))
            reconciler.run(ReconcileOptions(trigger="schedule", sources=("hr",)))
        fake.faults = FaultPlan()
        reconciler.run(ReconcileOptions(trigger="retry"))
        store.record_snapshot(_snapshot(6))
        reconciler.run(ReconcileOptions(trigger="schedule", sources=("hr",)))  # 14 suspensions: held


def _client(world: dict[str, Any]) -> TestClient:
    return TestClient(create_app(world["settings"], **{k: world[k] for k in ("store", "engine", "metrics")}))


def test_status_needs_the_admin_token(world: dict[str, Any]) -> None:
    client = _client(world)
    assert client.get("/status").status_code == 401
    assert client.get("/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    status = client.get("/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert [run["status"] for run in status["runs"]][:2] == ["held", "success"]
    assert status["held"] and status["failed_changes"]
    assert status["managed_users"] == {"active": 20}


def test_page_shows_aggregates_without_the_token_and_details_with_it(world: dict[str, Any]) -> None:
    client = _client(world)
    public = client.get("/").text
    assert "Last runs" in public and 'id="changes-chart"' in public
    assert "person" not in public and "Failed changes" not in public
    assert client.post("/login", data={"token": "wrong"}).status_code == 401
    answer = client.post("/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert answer.status_code == 303 and ADMIN_COOKIE in answer.cookies
    assert ADMIN_TOKEN not in answer.headers["set-cookie"]
    detailed = client.get("/").text
    assert "Failed changes" in detailed and "person" in detailed and "Held plans" in detailed


def test_readyz_checks_the_age_of_the_last_successful_sync(world: dict[str, Any]) -> None:
    client = _client(world)
    assert client.get("/readyz").json() == {"status": "ready"}
    stale = world["settings"].model_copy(
        update={"server": world["settings"].server.model_copy(update={"ready_max_sync_age": 0.001})}
    )
    app = create_app(stale, started_at=0.0, **{k: world[k] for k in ("store", "engine", "metrics")})
    answer = TestClient(app).get("/readyz")
    assert answer.status_code == 503 and "last successful sync" in answer.json()["reason"]


def test_bodies_over_the_limit_are_refused(world: dict[str, Any]) -> None:
    client = _client(world)
    assert client.post("/login", content=b"token=" + b"x" * 4096).status_code == 413


def test_every_metric_is_named_syncd(world: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(_client(world).get("/metrics").text))
    assert families and all(family.name.startswith("syncd_") for family in families)
    names = {family.name for family in families}
    assert {"syncd_runs", "syncd_changes", "syncd_guard_holds", "syncd_litellm_calls", "syncd_leader"} <= names


def _screenshot(chromium: str, url: str, png: Path, profile: Path, size: str = "1200,900") -> Counter[str]:
    """Chromium's screenshot of `url`; how many pixels of each colour (hex RGB) it shows."""
    png.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
    flags += [f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size}"]
    done = subprocess.run([chromium, *flags, url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return _colours(png.read_bytes())


def _colours(png: bytes) -> Counter[str]:
    """The pixels of an 8-bit, non-interlaced RGB(A) PNG, counted by colour: enough of PNG for Chromium's output."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
    chunks: dict[bytes, list[bytes]] = {}
    at = 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        chunks.setdefault(png[at + 4 : at + 8], []).append(png[at + 8 : at + 8 + length])
        at += 12 + length
    width, height, depth, kind, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert (depth, kind in (2, 6), interlace) == (8, True, 0), (depth, kind, interlace)
    step = 3 if kind == 2 else 4
    stride = width * step
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    counts: Counter[str] = Counter()
    above = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), above, step)
        counts.update(row[i : i + 3].hex() for i in range(0, stride, step))
        above = row
    return counts


def _unfilter(kind: int, row: bytearray, above: bytearray, step: int) -> bytearray:
    """Undo one PNG row filter (RFC 2083, 6): 0 none, 1 sub, 2 up, 3 average, 4 Paeth."""
    if kind == 2:
        return bytearray((a + b) & 255 for a, b in zip(row, above, strict=True))
    for i in range(len(row) if kind else 0):
        left = row[i - step] if i >= step else 0
        if kind == 1:
            row[i] = (row[i] + left) & 255
        elif kind == 3:
            row[i] = (row[i] + (left + above[i]) // 2) & 255
        else:
            corner = above[i - step] if i >= step else 0
            guess = left + above[i] - corner
            near = min(
                (abs(guess - left), 0, left), (abs(guess - above[i]), 1, above[i]), (abs(guess - corner), 2, corner)
            )
            row[i] = (row[i] + near[2]) & 255
    return row


def test_status_page_in_headless_chromium(world: dict[str, Any], tmp_path: Path, output_dir: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    app = create_app(world["settings"], **{k: world[k] for k in ("store", "engine", "metrics")})
    with serve_in_thread(app) as url:
        public = _screenshot(chromium, f"{url}/", output_dir / "status-page.png", tmp_path / "profile")
        client = TestClient(app)
        runs = client.get("/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["runs"]
        client.post("/login", data={"token": ADMIN_TOKEN})
        detailed = output_dir / "status-page-detailed.html"
        detailed.write_text(client.get("/").text)
    shown = _screenshot(
        chromium, detailed.as_uri(), output_dir / "status-page-detailed.png", tmp_path / "p", "1200,1300"
    )
    # the chart: a green bar per run's done changes, red stacked for its failed ones (both above their 100-pixel
    # legend squares, in the proportion of the runs' counts), an orange mark for the held run
    done, failed = sum(run["done"] for run in runs), sum(run["failed"] for run in runs)
    assert done > failed > 0 and any(run["status"] == "held" for run in runs), runs
    green, red = public[CHART["done"]] - 100, public[CHART["failed"]] - 100
    assert green > 5_000 and red > 500, (green, red)
    assert abs(red / green - failed / done) < 0.1 * failed / done, (red, green, failed, done)
    assert public[CHART["held"]] > 200
    # the page's own background, white cards and tables, and text; signed in, the held plans, conflicts and failed
    # changes below add text and table rows (the held plans come first, so in a 1300-pixel screenshot the rest
    # falls partly below the fold), and the chart is drawn the same
    assert public[BACKGROUND] > 300_000 and public["ffffff"] > 100_000 and public[TEXT] > 2_000
    assert shown[TEXT] > 1.1 * public[TEXT] and shown["ffffff"] > 1.1 * public["ffffff"], (shown, public)
    assert all(shown[colour] == public[colour] for colour in CHART.values())


def test_a_held_plan_is_decided_only_with_the_session_and_its_csrf_token(world: dict[str, Any]) -> None:
    store, client = world["store"], _client(world)
    (plan,) = store.held_plans()
    assert plan.status == "held" and len(plan.changes) == 14
    assert "person06" not in client.get("/").text  # the public page names nobody
    assert client.post(f"/held/{plan.id}", data={"decision": "reject"}).status_code == 401
    client.post("/login", data={"token": ADMIN_TOKEN})
    page = client.get("/").text
    assert f'id="held-plan-{plan.id}"' in page and "person06" in page and "no longer in hr" in page
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found is not None and ADMIN_TOKEN not in page
    csrf = found.group(1)
    refusals = [
        ({"decision": "reject"}, {}),  # the session, but not a form of its page
        ({"decision": "reject", "csrf": "0" * 64}, {}),
        ({"decision": "reject", "csrf": csrf}, {"Origin": "https://elsewhere.example"}),
        ({"decision": "reject", "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for form, headers in refusals:
        assert client.post(f"/held/{plan.id}", data=form, headers=headers).status_code == 403
    assert client.post(f"/held/{plan.id}", data={"decision": "vanish", "csrf": csrf}).status_code == 400
    assert store.held_plan(plan.id).status == "held"
    answer = client.post(
        f"/held/{plan.id}", data={"decision": "reject", "csrf": csrf, "note": "HR export is half empty"}
    )
    assert answer.status_code == 200 and "rejected" in answer.text  # the page again, after the 303
    assert store.held_plan(plan.id).status == "rejected"
    (entry,) = store.audit_entries(f"held-plan:{plan.id}")
    assert (entry["action"], entry["actor"], entry["reason"]) == (
        "reject",
        "admin (status page)",
        "HR export is half empty",
    )
    assert client.post(f"/held/{plan.id}", data={"decision": "reject", "csrf": csrf}).status_code == 409
    status = client.get("/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert [(p["id"], p["status"], len(p["deactivations"])) for p in status["held_plans"]] == [
        (plan.id, "rejected", 14)
    ]
