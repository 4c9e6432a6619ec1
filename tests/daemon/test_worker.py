"""The reconcile worker and the pull scheduler in-process: debounce and coalescing, followers, schedules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import MASTER_KEY, wait_for
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import text

from syncd.litellm import LiteLLMClient
from syncd.metrics import Metrics
from syncd.model import Group, Identity, Snapshot
from syncd.scheduler import PullScheduler, full_trigger
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm
from syncd.worker import ReconcileWorker


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings, a migrated SQLite store with five people in `engineers`, a client of the fake, metrics."""
    with serve_in_thread(create_fake_litellm(MASTER_KEY)) as url:
        settings = settings_from_dict(
            {
                "database": {"url": f"sqlite:///{tmp_path}/syncd.db"},
                "litellm": {"url": url, "master_key": MASTER_KEY},
                "scim": {"debounce_s": 0.3},
                "mappings": [{"group": "engineers"}],
                "ldap": [
                    {
                        "name": "corp",
                        "url": "ldap://127.0.0.1:1",
                        "schedule": {"full": "1h"},
                        "users": {"base_dn": "dc=x"},
                    }
                ],
            }
        )
        engine = make_engine(settings.database.url)
        upgrade(engine)
        store = SyncStore(engine)
        people = [Identity("okta", f"e{i}", f"p{i}", f"p{i}@example.org") for i in range(5)]
        group = Group("okta", "g", "engineers", members=frozenset(p.external_id for p in people))
        store.record_snapshot(Snapshot("okta", identities=people, groups=[group]))
        with LiteLLMClient(url, MASTER_KEY) as client:
            yield {"settings": settings, "store": store, "client": client, "metrics": Metrics()}
        engine.dispose()


def _runs(store: SyncStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(text("SELECT trigger FROM sync_runs ORDER BY id")).scalars())


def test_scim_writes_in_a_burst_make_one_run_after_the_debounce(parts: dict[str, Any]) -> None:
    worker = ReconcileWorker(parts["settings"], parts["store"], parts["client"], metrics=parts["metrics"])
    worker.start()
    try:
        for i in range(5):
            worker.on_scim_write({f"p{i}"})
            time.sleep(0.1)
        wait_for(lambda: worker.last_report is not None, 10, "a run")
        time.sleep(0.5)
        assert _runs(parts["store"]) == ["scim"]
        assert worker.last_report is not None and worker.last_report.applied is not None
        assert worker.last_report.applied.by_action == {"create": 5}
        histogram = parts["metrics"].scim_to_litellm
        assert (
            histogram._sum.get() > 0.3
            and parts["metrics"].registry.get_sample_value("syncd_scim_to_litellm_seconds_count") == 5
        )
    finally:
        assert worker.stop(10)


def test_a_follower_announces_writes_and_runs_nothing(parts: dict[str, Any]) -> None:
    told: list[dict[str, Any]] = []
    worker = ReconcileWorker(
        parts["settings"], parts["store"], parts["client"], is_leader=lambda: False, announce=told.append
    )
    worker.start()
    try:
        worker.on_scim_write({"p1", "p0"})
        worker.request("schedule", sources=["corp"])
        time.sleep(1.0)
        assert [m["user_ids"] for m in told] == [["p0", "p1"]]
        assert _runs(parts["store"]) == []
    finally:
        assert worker.stop(5)


def test_requests_while_stopping_are_not_run(parts: dict[str, Any]) -> None:
    worker = ReconcileWorker(parts["settings"], parts["store"], parts["client"])
    worker.start()
    worker.begin_stop()
    worker.request("schedule")
    assert worker.stop(5)
    assert _runs(parts["store"]) == []


def test_an_idle_leader_runs_the_drift_check_when_due(parts: dict[str, Any]) -> None:
    from syncd.reconcile import DRIFT_STATE

    settings = parts["settings"].model_copy(
        update={"litellm": parts["settings"].litellm.model_copy(update={"drift_check": 1.0})}
    )
    worker = ReconcileWorker(settings, parts["store"], parts["client"], tick_s=0.2)
    worker.start()
    try:
        first = wait_for(lambda: parts["store"].source_state(DRIFT_STATE).last_success_at, 10, "a drift check")
        wait_for(lambda: parts["store"].source_state(DRIFT_STATE).last_success_at != first, 10, "the next one")
        assert _runs(parts["store"])[:2] == ["drift", "drift"]
        assert worker.last_report is not None and worker.last_report.drift_checked
    finally:
        assert worker.stop(5)


def test_full_schedules_are_intervals_or_cron_with_jitter() -> None:
    interval = full_trigger("6h")
    assert isinstance(interval, IntervalTrigger) and interval.interval_length == 6 * 3600 and interval.jitter == 60
    assert full_trigger("30s").jitter == 3
    cron = full_trigger("0 */6 * * *")
    assert isinstance(cron, CronTrigger) and cron.jitter == 60


def test_only_the_leader_pulls_and_overdue_full_pulls_run_on_taking_the_lead(parts: dict[str, Any]) -> None:
    pulled: list[tuple[str, list[str]]] = []
    leading = [False]
    settings = parts["settings"]
    scheduler = PullScheduler(
        settings, parts["store"], on_pulled=lambda n, f, _users: pulled.append((n, f)), is_leader=lambda: leading[0]
    )
    scheduler.start()
    try:
        scheduler.pull("corp", incremental=False)
        assert pulled == []
        leading[0] = True
        scheduler.catch_up()  # never pulled: overdue, fired now (and fails: nothing listens on port 1)
        wait_for(lambda: pulled, 20, "the overdue full pull")
        assert pulled == [("corp", ["corp"])]
        assert parts["store"].source_state("corp").last_error
    finally:
        scheduler.shutdown()


class _ScriptedSource:
    """Stands in for an LdapSource: answers the next snapshot of a script."""

    def __init__(self, *snapshots: Snapshot) -> None:
        self.snapshots = list(snapshots)

    def pull(self, *, since: str | None = None) -> Snapshot:
        return self.snapshots.pop(0)


def test_an_incremental_pull_asks_to_reconcile_only_the_users_it_changed(parts: dict[str, Any]) -> None:
    pulled: list[tuple[str, list[str], set[str] | None]] = []
    scheduler = PullScheduler(
        parts["settings"], parts["store"], on_pulled=lambda *args: pulled.append(args), is_leader=lambda: True
    )
    alice = Identity("corp", "a", "alice", "alice@example.org")
    bob = Identity("corp", "b", "bob", "bob@example.org")
    renamed = Identity("corp", "b", "bob", "bob@example.org", display_name="Robert")
    scheduler._sources["corp"] = _ScriptedSource(
        Snapshot("corp", [alice, bob], [Group("corp", "g", "engineers", members=frozenset({"a", "b"}))]),
        Snapshot("corp", [renamed], incremental=True, high_water_mark="ts:1"),
        Snapshot("corp", [], incremental=True, high_water_mark="ts:2"),
    )
    scheduler.pull("corp", incremental=False)
    scheduler.pull("corp", incremental=True)
    scheduler.pull("corp", incremental=True)
    assert pulled == [("corp", [], None), ("corp", [], {"bob"})]
