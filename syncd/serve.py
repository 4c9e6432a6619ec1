"""`syncd serve`: the app under uvicorn, the scheduled pulls, the reconcile worker and leader election, wired once.

Start: wait for the database (up to `wait_db_s`), check the schema is at head (or migrate with `--migrate`), take
the SQLite lock file where there is one, then serve. SIGTERM/SIGINT: the worker stops taking new changes at once,
uvicorn closes its listeners, the changes in flight finish and are journaled, and `serve` returns 0 (1 if the
work in flight did not end within `stop_timeout_s`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections import Counter
from types import FrameType
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from syncd.app import create_app
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.scheduler import PullScheduler
from syncd.store import SchemaOutOfDate, make_engine, require_current_schema, schema_revision, upgrade
from syncd.store.leader import AlreadyServing, Leadership, leadership_for, migration_lock, replica_id
from syncd.store.repository import SyncStore
from syncd.worker import ReconcileWorker

__all__ = ["ServeError", "serve"]

log = logging.getLogger(__name__)

_NOTIFY_FLUSH_S = 5.0  # at shutdown, notifications still queued get this long to go out


class ServeError(Exception):
    """serve cannot start: the database is unreachable, its schema out of date, or the SQLite file in use."""


class _Server(uvicorn.Server):
    """uvicorn, telling the daemon about SIGTERM/SIGINT at once and not re-raising the signal after shutdown."""

    def __init__(self, config: uvicorn.Config, on_signal: Any) -> None:
        super().__init__(config)
        self.on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop taking work; a second SIGINT forces uvicorn out."""
        self.on_signal(sig)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with the bounds it lacks: a deadline for the request head (however slowly its bytes
    trickle in, keep-alive requests included) and then for the body, a cap on open connections per client address
    (a connection past it is closed at once, so one client's flood of slow connections cannot take the others'
    places), and a cap on open connections in all that makes room for a newcomer by closing the connection that has
    waited longest for a request head (a slow or idle one), so that a flood from many addresses cannot take every
    place either; only when every connection is busy with a request does a newcomer get 503. (uvicorn's own
    `limit_concurrency` answers 503 to everyone once that many connections are open, slow ones included.) h11 rather
    than httptools because only h11 caps the size of the request head (`max_incomplete_event_size`); with httptools a
    512 MiB header was read whole."""

    head_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    per_client: ClassVar[int] = 0
    max_open: ClassVar[int] = 1000
    open_by_client: ClassVar[Counter[str]] = Counter()
    #: the connections waiting for a request head, the longest waiting first
    waiting: ClassVar[dict[_GuardedH11, None]] = {}
    #: the connections closed here whose connection_lost has not come yet (still in uvicorn's count)
    closing: ClassVar[set[_GuardedH11]] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the client's connections; past its cap, close this one before reading anything. Past the cap of
        all connections, close those waiting longest for a head; if none is waiting, answer this one 503."""
        super().connection_made(transport)
        host = self.client[0] if self.client else ""
        if self.per_client and self.open_by_client[host] >= self.per_client:
            self._close()
            return
        if not self._make_room():
            transport.write(_BUSY)
            self._close()
            return
        self.open_by_client[host] += 1
        self._counted = host
        self._arm("head")

    def _make_room(self) -> bool:
        excess = len(self.connections) - len(self.closing) - self.max_open
        while excess > 0 and self.waiting:
            next(iter(self.waiting))._close()
            excess -= 1
        return excess <= 0

    def _close(self) -> None:
        self.waiting.pop(self, None)
        self.closing.add(self)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (and its deadline)."""
        self.closing.discard(self)
        self._disarm()
        if self._counted is not None:
            self.open_by_client[self._counted] -= 1
            if self.open_by_client[self._counted] <= 0:
                del self.open_by_client[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Bytes after an answer that closes the connection (a 413 before the body's end) are not parsed."""
        if self.conn.our_state in (h11.MUST_CLOSE, h11.CLOSED):
            self.transport.close()
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a malformed request, unless an answer was already sent: then the connection closes
        (uvicorn would raise h11's LocalProtocolError out of the event loop)."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.close()
            return
        super().send_400_response(msg)

    def handle_events(self) -> None:
        """h11's events, then the deadline of the phase the request is in."""
        super().handle_events()
        self._follow()

    def on_response_complete(self) -> None:
        """A kept-alive connection waits for the next request head, under the head deadline again."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._phase = None
            self._follow()

    def _follow(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE and self._phase is None and self._counted is not None:
            self._arm("head")
        elif state is h11.SEND_BODY and self._phase != "body":
            self._arm("body")
        elif state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()

    def _arm(self, phase: str) -> None:
        self._disarm()
        self._phase = phase
        if phase == "head":
            self.waiting[self] = None
        delay = self.head_timeout_s if phase == "head" else self.body_timeout_s
        self._deadline = self.loop.call_later(delay, self._expired)

    def _disarm(self) -> None:
        self.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._close()


#: the answer to a connection past `server.max_connections` when every open one is busy with a request
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: 25\r\n\r\nToo many open connections"
)


def _protocol(server: Any) -> type[H11Protocol]:
    """The HTTP protocol class of one server, bound to its limits (and a connection count of its own)."""
    attributes = {
        "head_timeout_s": server.header_timeout_s,
        "body_timeout_s": server.body_timeout_s,
        "per_client": server.max_connections_per_client,
        "max_open": server.max_connections,
        "open_by_client": Counter(),
        "waiting": {},
        "closing": set(),
    }
    return type("SyncdH11Protocol", (_GuardedH11,), attributes)


class _Election:
    """The thread that keeps trying for (or keeps) leadership and acts when it changes hands."""

    def __init__(self, leadership: Leadership, worker: ReconcileWorker, scheduler: PullScheduler, metrics: Metrics):
        self.leadership, self.worker, self.scheduler, self.metrics = leadership, worker, scheduler, metrics
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="leader-election", daemon=True)

    def _loop(self) -> None:
        leading = False
        self.metrics.leader.set(0)
        while not self.stopping.is_set():
            self.leadership.step(self._message, 1.0)
            if self.leadership.held != leading:
                leading = self.leadership.held
                self.metrics.leader.set(1 if leading else 0)
                if leading:
                    self._took_lead()

    def _took_lead(self) -> None:
        log.info("this replica leads: scheduled pulls and applies run here", extra={"replica": replica_id()})
        self.worker.request("leader")
        try:
            self.scheduler.catch_up()
        except Exception:
            log.exception("could not look for overdue pulls")

    def _message(self, message: dict[str, Any]) -> None:
        user_ids = [str(u) for u in message.get("user_ids") or []]
        at = float(message.get("at") or time.time())
        self.worker.note_writes(user_ids, at)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


def _engine(url: str) -> Any:
    if url.startswith("postgresql"):
        return make_engine(url, connect_args={"connect_timeout": 5})
    return make_engine(url)


def _prepare_database(engine: Any, *, migrate: bool, wait_db_s: float) -> None:
    deadline = time.monotonic() + wait_db_s
    while True:
        try:
            current, head = schema_revision(engine)
            break
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise ServeError(f"cannot reach the database: {type(exc).__name__}: {_first_line(exc)}") from None
            log.warning("database not reachable yet, retrying: %s", _first_line(exc))
            time.sleep(1)
    if migrate and current != head:
        with migration_lock(engine):
            current, head = schema_revision(engine)
            if current != head:
                log.info("migrating the database schema", extra={"from": current or "empty", "to": head})
                upgrade(engine)
    try:
        require_current_schema(engine)
    except SchemaOutOfDate as exc:
        raise ServeError(f"{exc} (or start serve with --migrate)") from None


def _announce_config(settings: Any, engine: Any) -> None:
    """Log what this process will do (the config echo): no secret, the database password hidden and redacted."""
    from syncd.logs import redact

    redact(engine.url.password)
    summary = {
        "database": engine.url.render_as_string(hide_password=True),
        "litellm": settings.litellm.url,
        "ldap_sources": {s.name: s.schedule.model_dump() for s in settings.ldap},
        "scim": settings.scim.source_names if settings.scim.enabled else "disabled",
        "oauth_clients": [c.client_id for c in settings.scim.oauth_clients] if settings.scim.oauth_active else [],
        "admin_token": "set" if settings.server.admin_token is not None else "unset",
        "mappings": len(settings.mappings),
        "notify": [w.label for w in settings.notify if w.enabled],
    }
    log.info("configuration", extra={"config": summary})
    short = [f"scim.tokens ({name})" for name in settings.scim.short_tokens()] if settings.scim.enabled else []
    token = settings.server.admin_token
    if token is not None and len(token.get_secret_value().encode()) < 32:
        short.append("server.admin_token")
    for where in short:
        log.warning("%s is shorter than 32 bytes: use a long random token", where)
    for webhook in settings.notify:
        if webhook.plain_http:
            log.warning("notify webhook %s is plain http: its events travel unencrypted (use https)", webhook.label)


def _client(settings: Any, metrics: Metrics) -> Any:
    from syncd.litellm import LiteLLMClient

    try:
        return LiteLLMClient.from_settings(settings.litellm, on_call=metrics.record_litellm_call)
    except ValueError as exc:
        raise ServeError(str(exc)) from None


def serve(
    settings: Any,
    *,
    migrate: bool = False,
    host: str | None = None,
    port: int | None = None,
    wait_db_s: float = 30.0,
    stop_timeout_s: float = 25.0,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; 0 on a clean stop. Raises ServeError when it cannot start."""
    engine = _engine(settings.database.url)
    _announce_config(settings, engine)
    _prepare_database(engine, migrate=migrate, wait_db_s=wait_db_s)
    try:
        leadership = leadership_for(engine)
    except AlreadyServing as exc:
        raise ServeError(str(exc)) from None
    metrics = Metrics()
    metrics.up_since.set(time.time())
    store = SyncStore(engine)
    client = _client(settings, metrics)
    notifier = Notifier.from_settings(settings.notify, metrics)
    worker = ReconcileWorker(
        settings,
        store,
        client,
        metrics=metrics,
        is_leader=lambda: leadership.held,
        announce=leadership.announce,
        notifier=notifier,
    )
    scheduler = PullScheduler(
        settings,
        store,
        on_pulled=lambda name, failed, user_ids: worker.request(
            "schedule", sources=[name], failed=failed, user_ids=user_ids or ()
        ),
        is_leader=lambda: leadership.held,
        metrics=metrics,
    )
    election = _Election(leadership, worker, scheduler, metrics)
    app = create_app(settings, store=store, engine=engine, metrics=metrics, worker=worker, leadership=leadership)
    limits = settings.server
    config = uvicorn.Config(
        app,
        host=host or limits.host,
        port=limits.port if port is None else port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        http=_protocol(limits),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        limit_concurrency=None,  # the protocol caps connections (max_open), evicting slow heads first
        timeout_keep_alive=max(1, round(limits.keep_alive_s)),
    )
    server = _Server(config, on_signal=lambda sig: _stopping(sig, worker, scheduler))
    worker.start()
    scheduler.start()
    election.thread.start()
    log.info("syncd serve started", extra={"replica": replica_id(), "port": config.port})
    listened = True
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying it could not start (the port is taken, say)
        listened = False
    finally:
        clean = _shutdown(worker, scheduler, election, leadership, stop_timeout_s)
        if notifier is not None:
            notifier.close(_NOTIFY_FLUSH_S)
        client.close()
        engine.dispose()
    if not listened:
        raise ServeError(f"could not serve HTTP on {config.host}:{config.port} (see the error logged above)")
    return 0 if clean else 1


def _stopping(sig: int, worker: ReconcileWorker, scheduler: PullScheduler) -> None:
    log.info("signal %s: finishing the work in flight, taking no more", signal.Signals(sig).name)
    worker.begin_stop()
    scheduler.begin_stop()


def _shutdown(
    worker: ReconcileWorker, scheduler: PullScheduler, election: _Election, leadership: Leadership, timeout_s: float
) -> bool:
    scheduler.shutdown()
    clean = worker.stop(timeout_s)
    if not clean:
        log.error("the reconcile in flight did not finish within %.0f s; stopping anyway", timeout_s)
    election.stop()
    leadership.release()
    log.info("syncd serve stopped", extra={"clean": clean})
    return clean


def _first_line(exc: BaseException) -> str:
    from syncd.logs import scrub

    return scrub((str(exc).strip().splitlines() or [""])[0][:300])
