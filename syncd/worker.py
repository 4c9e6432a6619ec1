"""The reconcile worker of `syncd serve`: one reconcile at a time in a background thread, fed by SCIM and schedules.

Requests coalesce: SCIM writes wait `scim.debounce_s` for more writes (at most ten times that in all), scheduled
pulls run at once, and everything asked while a run is going becomes one next run. A run asked for by SCIM writes
only is targeted at the users written; any other request makes it a run of everyone. Only the leader runs
reconciles; a follower's SCIM writes are announced to the leader instead. Stopping (SIGTERM, or leadership lost)
lets the changes in flight finish and be journaled, leaves the not yet started ones pending (the next run
supersedes and re-plans them) and takes no new work.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.apply import ApplyStopped
from syncd.litellm import LiteLLM
from syncd.logs import bind_log_context, debug_enabled, log_context, one_line
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.plan import Change
from syncd.reconcile import ReconcileOptions, Reconciler, RunReport
from syncd.run_events import RunWatch
from syncd.settings import Settings
from syncd.store.repository import SyncStore

__all__ = ["ReconcileWorker", "ShutdownRequested"]

log = logging.getLogger(__name__)

_TICK_S = 30.0  # how often an idle leader looks whether a drift check is due
_RETRY_S = (30.0, 60.0, 120.0, 300.0, 600.0)  # after a failed run, the next try waits this long (then the last)
_MAX_TRACKED_WRITES = 50_000
_MAX_TARGETED = 1_000  # SCIM writes of more users than this make a run of everyone


#: the run stopped taking new changes (the process is stopping, or lost leadership); kept under this name here
ShutdownRequested = ApplyStopped


@dataclass(slots=True)
class _Request:
    """What the next run must cover and when it is due (requests coalesce into one)."""

    debounce_s: float
    triggers: list[str] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    asked_due: float = math.inf  # the earliest due time of the non-SCIM requests
    first_write: float | None = None
    last_write: float | None = None
    #: the users SCIM wrote; a run of them only (targeted) unless `everyone` or too many
    user_ids: set[str] = field(default_factory=set)
    everyone: bool = False

    @property
    def due(self) -> float:
        """Monotonic time the run should start: SCIM writes wait for a quiet spell, capped at 10 debounces."""
        if self.first_write is None or self.last_write is None:
            return self.asked_due
        quiet = min(self.last_write + self.debounce_s, self.first_write + 10 * self.debounce_s)
        return min(self.asked_due, quiet)

    def add(self, trigger: str, sources: Iterable[str], failed: Iterable[str], user_ids: Iterable[str] = ()) -> None:
        """Cover this trigger, these sources and users too (a request naming no user covers everyone)."""
        ids = set(user_ids)
        self.user_ids |= ids
        self.everyone = self.everyone or not ids
        if trigger not in self.triggers:
            self.triggers.append(trigger)
        self.sources.update(sources)
        self.failed.update(failed)


class _RunTaggingStore(SyncStore):
    """The store, binding each run's id to the log context of the thread that runs it."""

    def start_run(self, trigger: str, sources: Any = ()) -> int:
        """Open a run and tag this thread's logs with its id."""
        run_id = super().start_run(trigger, sources)
        bind_log_context(run_id=run_id)
        return run_id


class ReconcileWorker:
    """Runs reconciles one at a time on a background thread, when this replica leads."""

    def __init__(
        self,
        settings: Settings,
        store: SyncStore,
        client: LiteLLM,
        *,
        metrics: Metrics | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        announce: Callable[[dict[str, Any]], None] | None = None,
        tick_s: float = _TICK_S,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings, self.client, self.metrics = settings, client, metrics
        self.store = _RunTaggingStore(store.engine)
        self.is_leader, self.announce, self.tick_s = is_leader, announce, tick_s
        self.debounce_s = float(settings.scim.debounce_s)
        self._cond = threading.Condition()
        self._request: _Request | None = None
        self._written: dict[str, float] = {}  # user_id -> unix time of its earliest unapplied SCIM write
        self._stopping = threading.Event()
        self._current: Reconciler | None = None  # the run in progress, if any (it says whether it is applying)
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._next_tick = 0.0
        self.busy = False
        self.last_report: RunReport | None = None
        #: tells the webhooks of `notify:` what each run did (None: no webhook)
        self.watch = RunWatch(notifier, self.store) if notifier is not None else None

    # -- asking for work ---------------------------------------------------------------------------------------
    def request(
        self,
        trigger: str,
        *,
        sources: Iterable[str] = (),
        failed: Iterable[str] = (),
        delay_s: float = 0.0,
        user_ids: Iterable[str] = (),
    ) -> None:
        """Ask for a reconcile `delay_s` from now (coalesced with whatever is already asked); of `user_ids` only, if
        any are named (an incremental pull), else of everyone."""
        with self._cond:
            request = self._pending()
            request.add(trigger, sources, failed, user_ids)
            request.asked_due = min(request.asked_due, time.monotonic() + delay_s)
            self._cond.notify_all()
        self._count_request(trigger)

    def on_scim_write(self, user_ids: set[str]) -> None:
        """The SCIM router's on_write: reconcile soon here, or tell the leader when this replica follows."""
        now = time.time()
        if not self.is_leader() and self.announce is not None:
            self.announce({"user_ids": sorted(user_ids), "at": now})
            return
        self.note_writes(user_ids, now)

    def note_writes(self, user_ids: Iterable[str], at: float) -> None:
        """Remember when these users were written (for syncd_scim_to_litellm_seconds); reconcile after the debounce."""
        user_ids = list(user_ids)
        with self._cond:
            for user_id in user_ids:
                if len(self._written) < _MAX_TRACKED_WRITES:
                    self._written.setdefault(user_id, at)
            request = self._pending()
            request.add("scim", (), (), user_ids)
            now = time.monotonic()
            request.first_write = now if request.first_write is None else request.first_write
            request.last_write = now
            self._cond.notify_all()
        self._count_request("scim")

    def _pending(self) -> _Request:
        if self._request is None:
            self._request = _Request(self.debounce_s)
        return self._request

    def _count_request(self, trigger: str) -> None:
        if self.metrics is not None:
            self.metrics.reconcile_requests.labels(trigger).inc()

    # -- the thread ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (the first drift look waits a tick: taking the lead already runs once)."""
        self._next_tick = time.monotonic() + self.tick_s
        self._thread = threading.Thread(target=self._loop, name="reconcile-worker", daemon=True)
        self._thread.start()

    def begin_stop(self) -> None:
        """Take no new work from now on (safe from a signal handler: no lock taken)."""
        self._stopping.set()

    def stop(self, timeout_s: float = 25.0) -> bool:
        """Take no new work and let the changes in flight finish; False if still applying after `timeout_s`."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        current = self._current
        if self._thread.is_alive() and not (current is not None and current.applying):  # planning: it only reads
            log.warning("the run in progress was still planning (reading only): left behind")
            return True
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            request = self._next_request()
            if request is not None:
                self._run(request)

    def _next_request(self) -> _Request | None:
        while not self._stopping.is_set():
            now, leading = time.monotonic(), self.is_leader()
            if leading and now >= self._next_tick:
                self._next_tick = now + self.tick_s
                self._tick()
                continue
            with self._cond:
                request = self._request
                if leading and request is not None and request.due <= now:
                    self._request = None
                    return request
                due = request.due if leading and request is not None else math.inf
                self._cond.wait(max(0.01, min(1.0, due - now, self._next_tick - now)))
        return None

    def _tick(self) -> None:
        """Idle leader: a drift check when due, a retry after a failed run."""
        try:
            if self._reconciler().drift_due():
                self.request("drift")
        except Exception as exc:  # the database may be away; the next tick tries again
            log.warning("could not check whether a drift check is due: %s", exc)

    def _run(self, request: _Request) -> None:
        with self._cond:
            written, self._written = self._written, {}
        trigger = "+".join(request.triggers)
        targeted = not request.everyone and len(request.user_ids) <= _MAX_TARGETED
        options = ReconcileOptions(
            trigger=trigger[:50],
            failed_sources=tuple(sorted(request.failed)),
            sources=tuple(sorted(request.sources)),
            user_ids=tuple(sorted(request.user_ids)) if targeted else (),
        )
        self.busy = True
        try:
            with log_context(trigger=options.trigger, source=",".join(options.sources) or "all"):
                self._reconcile(options, written)
        finally:
            self.busy = False
            self._refresh_gauges()

    def _reconcile(self, options: ReconcileOptions, written: dict[str, float]) -> None:
        def done(user_id: str) -> None:
            at = written.pop(user_id, None)
            if at is not None and self.metrics is not None:
                self.metrics.scim_to_litellm.observe(max(0.0, time.time() - at))

        if self.watch is not None:
            self.watch.before_run(options.trigger)
        try:
            report = self._reconciler(on_done=done).run(options)
        except ShutdownRequested as exc:
            log.warning("run interrupted after the changes in flight: %s", exc)
            self._restore(written)
            return
        except Exception as exc:
            self._restore(written)
            self._schedule_retry(f"reconcile failed: {one_line(exc)}", exc)
            if self.watch is not None:
                self.watch.raised(exc)
            return
        self.last_report = report
        if self.watch is not None:
            self.watch.after_run(report)
        log.info("run finished", extra={"status": report.status, "seconds": round(report.seconds, 3)})
        if report.status == "failed":
            self._schedule_retry(f"run {report.run_id} failed")
        else:
            self._failures = 0
        self._retry_held(report)

    def _retry_held(self, report: RunReport) -> None:
        """A run whose deactivations the guard held is run again: at once as a run of everyone when it was targeted
        (that run keeps the held plan), else when the guard's window would let them through."""
        holding = report.holding
        if holding is None or not holding.held:
            return
        if holding.needs_full_run:
            self.request("held")
        elif holding.retry_at is not None:
            self.request("retry", delay_s=max(1.0, holding.retry_at - time.time()))

    def _reconciler(self, on_done: Callable[[str], None] = lambda _user_id: None) -> Reconciler:
        def outcome(change: Any, status: str) -> None:
            if status == "done" and isinstance(change, Change):
                on_done(change.user_id)

        self._current = Reconciler(
            self.settings,
            self.store,
            self.client,
            metrics=self.metrics,
            should_stop=lambda: self._stopping.is_set() or not self.is_leader(),
            on_outcome=outcome,
        )
        return self._current

    def _restore(self, written: dict[str, float]) -> None:
        with self._cond:
            for user_id, at in written.items():
                self._written.setdefault(user_id, at)

    def _schedule_retry(self, what: str, exc: BaseException | None = None) -> None:
        """One line per failed try: what failed and when the next try is (the traceback only with --debug)."""
        delay = _RETRY_S[min(self._failures, len(_RETRY_S) - 1)]
        self._failures += 1
        at = datetime.now(UTC) + timedelta(seconds=delay)
        log.error(
            "%s; %d failed in a row, next try in %.0f s at %s",
            what,
            self._failures,
            delay,
            at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            exc_info=exc if exc is not None and debug_enabled() else None,
            extra={"next_try_at": at.isoformat(timespec="seconds")},
        )
        self.request("retry", delay_s=delay)

    def _refresh_gauges(self) -> None:
        if self.metrics is None:
            return
        try:
            self.metrics.pending_changes.set(self.store.journal_counts().get("pending", 0))
            statuses = [plan.status for plan in self.store.held_plans()]
            for status in ("held", "approved", "rejected"):
                self.metrics.held_plans.labels(status).set(statuses.count(status))
            if self.last_report is not None and self.last_report.run_id is not None:
                failed = self.store.journal_counts(self.last_report.run_id).get("failed", 0)
                self.metrics.failed_changes.set(failed)
        except Exception as exc:  # gauges wait for the next run
            log.debug("could not refresh the journal gauges: %s", exc)
