"""Scheduled LDAP pulls: an APScheduler job per source for its `full` and its `incremental` schedule.

With content sync (RFC 4533) the `full` pulls read only what changed; a third job per source, on `schedule.verify`
(default daily), is the safety net: a true full pull that reads every entry, whose difference from the
change-based state is logged as drift and counted in syncd_source_drift.

`schedule.full` is a cron string ("0 */6 * * *") or an interval ("6h"); `schedule.incremental` an interval. Each
job has jitter (a tenth of its period, at most a minute), never overlaps itself (`max_instances=1`) and runs a
missed fire once (`coalesce=True`). A job pulls through `syncd.pull`, records, then asks the reconcile worker for a
run. Every replica schedules the jobs, but only the leader's do anything; on taking the lead, a replica runs at
once the full pulls that are overdue (never pulled, or the last full pull is older than one period).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.durations import parse_interval
from syncd.logs import log_context
from syncd.metrics import Metrics
from syncd.pull import pull_sources

__all__ = ["PullScheduler", "full_trigger"]

log = logging.getLogger(__name__)

_MAX_JITTER_S = 60


def _jitter(period_s: float) -> int:
    return int(min(_MAX_JITTER_S, period_s / 10))


def full_trigger(schedule: str) -> BaseTrigger:
    """The trigger of a `full` schedule: an interval string ("6h") or a cron string ("0 */6 * * *")."""
    try:
        seconds = parse_interval(schedule)
    except ValueError:
        trigger = CronTrigger.from_crontab(schedule, timezone=UTC)
        trigger.jitter = _MAX_JITTER_S
        return trigger
    return IntervalTrigger(seconds=seconds, jitter=_jitter(seconds), timezone=UTC)


def _log_schedule(source: Any) -> None:
    """Say at start when each source is pulled, and whether that is the default schedule (no `schedule:` key)."""
    schedule = source.schedule
    incremental = f"every {schedule.incremental:g} s" if schedule.incremental else "off"
    log.info(
        "scheduled pulls: full %s, incremental %s%s",
        repr(schedule.full) if schedule.full else "off",
        incremental,
        "" if "schedule" in source.model_fields_set else " (the default schedule: the source sets no schedule)",
        extra={"source": source.name},
    )


class PullScheduler:
    """The scheduled pulls of every LDAP source, run only while `is_leader()`."""

    def __init__(
        self,
        settings: Any,
        store: Any,
        *,
        on_pulled: Callable[[str, list[str], set[str] | None], None],
        is_leader: Callable[[], bool],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        self.on_pulled, self.is_leader = on_pulled, is_leader
        self.scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"max_instances": 1, "coalesce": True})
        self._sources: dict[str, Any] = {}  # LdapSource per name: its index makes incremental pulls possible
        self._locks = {source.name: threading.Lock() for source in settings.ldap}
        self.stopping = threading.Event()

    def start(self) -> None:
        """Add a job per schedule and start the scheduler thread."""
        for source in self.settings.ldap:
            _log_schedule(source)
            if source.schedule.full:
                trigger = full_trigger(source.schedule.full)
                self._add(f"{source.name}:full", trigger, source.name, incremental=False)
            if source.schedule.incremental:
                seconds = float(source.schedule.incremental)
                trigger = IntervalTrigger(seconds=seconds, jitter=_jitter(seconds), timezone=UTC)
                self._add(f"{source.name}:incremental", trigger, source.name, incremental=True)
            if (
                source.schedule.verify
                and source.content_sync != "off"
                and (source.schedule.full or source.schedule.incremental)
            ):
                trigger = full_trigger(source.schedule.verify)
                self._add(f"{source.name}:verify", trigger, source.name, incremental=False, true_full=True)
        self.scheduler.start()

    def _add(self, job_id: str, trigger: BaseTrigger, name: str, *, incremental: bool, true_full: bool = False) -> None:
        grace = 3600 if not incremental else 60
        kwargs = {"incremental": incremental, **({"true_full": True} if true_full else {})}
        self.scheduler.add_job(self.pull, trigger, args=[name], kwargs=kwargs, id=job_id, misfire_grace_time=grace)

    def begin_stop(self) -> None:
        """Start no more pulls (safe from a signal handler)."""
        self.stopping.set()

    def shutdown(self) -> None:
        """Stop firing jobs (a pull in progress finishes on its own thread)."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def catch_up(self) -> None:
        """Fire now the full pulls that are overdue (called when this replica takes the lead)."""
        now = datetime.now(UTC)
        for source in self.settings.ldap:
            if source.schedule.full and self._overdue(source.name, source.schedule.full, now):
                job = self.scheduler.get_job(f"{source.name}:full")
                if job is not None:
                    log.info("full pull overdue: running it now", extra={"source": source.name})
                    job.modify(next_run_time=now)

    def _overdue(self, name: str, schedule: str, now: datetime) -> bool:
        last = self.store.source_state(name).last_full_at
        if last is None:
            return True
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        trigger = full_trigger(schedule)
        if isinstance(trigger, IntervalTrigger):
            return bool(last + timedelta(seconds=trigger.interval_length) <= now)
        following = trigger.get_next_fire_time(None, last)
        return following is not None and following <= now

    def pull(self, name: str, *, incremental: bool, true_full: bool = False) -> None:
        """One scheduled pull of one source (skipped unless leader); then ask for a reconcile."""
        if self.stopping.is_set() or not self.is_leader():
            log.debug("not the leader (or stopping): scheduled pull skipped", extra={"source": name})
            return
        lock = self._locks[name]
        if not lock.acquire(blocking=not incremental):
            log.info("a pull of this source is running: incremental pull skipped", extra={"source": name})
            return
        affected: set[str] = set()
        try:
            mode = "verify" if true_full else "incremental" if incremental else "full"
            with log_context(source=name, mode=mode):
                failed = self._pull_and_record(name, incremental=incremental, affected=affected, true_full=true_full)
        finally:
            lock.release()
        if incremental and not failed:
            # an incremental pull changes only what it names: reconcile those users (none: nothing to do); a full
            # pull or a failure asks for everyone, the level-based safety net
            if affected:
                self.on_pulled(name, failed, affected)
            return
        self.on_pulled(name, failed, None)

    def _pull_and_record(
        self, name: str, *, incremental: bool, affected: set[str] | None = None, true_full: bool = False
    ) -> list[str]:
        mode = "verify" if true_full else "incremental" if incremental else "full"
        try:
            _, failed = pull_sources(
                self.settings,
                self.store,
                [name],
                record=True,
                incremental=incremental,
                sources=self._sources,
                metrics=self.metrics,
                affected=affected,
                true_full=true_full,
            )
        except Exception:
            log.exception("scheduled pull failed")
            failed = [name]
        if self.metrics is not None:
            self.metrics.pulls.labels(name, mode, "failed" if failed else "success").inc()
        log.info("scheduled pull done", extra={"outcome": "failed" if failed else "success"})
        return failed
