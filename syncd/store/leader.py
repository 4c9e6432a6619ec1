"""Which replica of `syncd serve` does the scheduled pulls and the applies, and how the others reach it.

PostgreSQL (`AdvisoryLeadership`): the leader holds a session-level advisory lock on a dedicated connection and
LISTENs on a channel there; every other replica tries the lock every second. When the leader dies, even by SIGKILL,
PostgreSQL ends its session and frees the lock, and the next try of another replica wins; a leader whose host
vanishes without closing its connection is cut off by `idle_session_timeout` (15 s, PostgreSQL 14+). A follower
that records a SCIM write NOTIFYs the channel, so the leader reconciles it within about a second. A leader whose
connection breaks steps down at once (its `held` turns False) before anyone else can take over.

SQLite (`FileLeadership`): one replica only. An exclusive lock on `<database>.lock` beside the file is taken at start;
a second `syncd serve` on the same file is refused with `AlreadyServing`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

__all__ = [
    "AdvisoryLeadership",
    "AlreadyServing",
    "FileLeadership",
    "Leadership",
    "leadership_for",
    "migration_lock",
    "replica_id",
]

log = logging.getLogger(__name__)

#: the advisory lock key: the first 8 bytes of "syncd-leader" as a signed 64-bit integer
LOCK_KEY = int.from_bytes(b"syncd-ld", "big", signed=True)
#: held while one replica runs `serve --migrate`, so replicas starting together migrate one after the other
MIGRATION_KEY = int.from_bytes(b"syncd-mg", "big", signed=True)
CHANNEL = "syncd_writes"
SESSION_TIMEOUT_S = 15
_MAX_PAYLOAD = 7000  # PostgreSQL caps a NOTIFY payload at 8000 bytes


class AlreadyServing(Exception):
    """Another `syncd serve` already uses this SQLite database."""


class Leadership(Protocol):
    """What the daemon asks of leader election."""

    @property
    def held(self) -> bool:
        """True while this replica is the leader."""

    def step(self, on_message: Callable[[dict[str, Any]], None], wait_s: float) -> None:
        """Try to become (or stay) leader; as leader, deliver followers' messages; block at most `wait_s`."""

    def announce(self, message: dict[str, Any]) -> None:
        """Tell the leader about a write recorded here (a no-op where this replica is the only one)."""

    def release(self) -> None:
        """Give up leadership and close what it holds."""


def replica_id() -> str:
    """This process, as logs and the status page name it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, hold an advisory lock for the block (replicas migrating at once wait in turn)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_KEY})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_KEY})
            conn.commit()


def leadership_for(engine: Engine) -> Leadership:
    """Advisory-lock leadership on PostgreSQL; a file lock (single replica) on SQLite."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLeadership(engine)
    database = engine.url.database
    return FileLeadership(None if not database or database == ":memory:" else Path(database))


class FileLeadership:
    """Single replica on SQLite: an exclusive lock file beside the database, held for the life of the process."""

    def __init__(self, database: Path | None) -> None:
        self.path = None if database is None else database.with_name(database.name + ".lock")
        self._file: Any = None
        if self.path is not None:
            self._lock()

    def _lock(self) -> None:
        import fcntl

        assert self.path is not None
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AlreadyServing(
                f"another syncd serve ({holder}) already uses this SQLite database (lock {self.path}); "
                "SQLite supports a single replica: use PostgreSQL to run several"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(replica_id() + "\n")
        handle.flush()
        self._file = handle

    @property
    def held(self) -> bool:
        """Always True: the only replica leads."""
        return True

    def step(self, on_message: Callable[[dict[str, Any]], None], wait_s: float) -> None:
        """Nothing to elect; just wait."""
        time.sleep(wait_s)

    def announce(self, message: dict[str, Any]) -> None:
        """The only replica needs no announcement."""

    def release(self) -> None:
        """Unlock and close the lock file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class AdvisoryLeadership:
    """Leadership on PostgreSQL: pg_try_advisory_lock on a dedicated connection, LISTEN/NOTIFY for followers' writes."""

    def __init__(self, engine: Engine, *, key: int = LOCK_KEY, channel: str = CHANNEL) -> None:
        self.engine, self.key, self.channel = engine, key, channel
        self._fairy: Any = None  # SQLAlchemy's handle of the lock's connection (closing it ends the session)
        self._conn: Any = None  # the psycopg connection under it, which holds the lock
        self._last_problem: str | None = None
        self._held = False
        self._lock_engine = _lock_engine(engine)

    @property
    def held(self) -> bool:
        """True while this replica holds the lock on a live connection."""
        return self._held

    def step(self, on_message: Callable[[dict[str, Any]], None], wait_s: float) -> None:
        """Try the lock (follower) or wait for notifications (leader); a broken connection means stepping down."""
        try:
            if not self._held:
                self._try_acquire()
            if self._held:
                self._receive(on_message, wait_s)
                return
        except Exception as exc:  # any database trouble ends leadership; the loop retries
            self._step_down(f"{type(exc).__name__}: {_first_line(exc)}")
        time.sleep(wait_s)

    def _try_acquire(self) -> None:
        if self._conn is None:
            self._fairy = self._lock_engine.raw_connection()
            self._conn = self._fairy.driver_connection
            self._conn.autocommit = True
            # a leader whose host vanishes stops answering: PostgreSQL then ends its session (and frees the lock)
            # after this much silence, even where TCP would take hours to notice; the leader speaks every second
            with contextlib.suppress(Exception):
                self._conn.execute(f"SET idle_session_timeout = '{SESSION_TIMEOUT_S}s'")
        got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
        if got:
            self._conn.execute(f"LISTEN {self.channel}")
            self._held, self._last_problem = True, None
            log.info("leadership acquired", extra={"replica": replica_id()})

    def _receive(self, on_message: Callable[[dict[str, Any]], None], wait_s: float) -> None:
        for notify in self._conn.notifies(timeout=wait_s, stop_after=100):
            try:
                on_message(json.loads(notify.payload))
            except ValueError:
                log.warning("ignored a malformed notification")
        self._conn.execute("SELECT 1")  # notices a dead connection within one step, and keeps the session alive

    def _step_down(self, reason: str) -> None:
        if self._held:
            log.error("leadership lost: %s", reason, extra={"replica": replica_id()})
        elif reason != self._last_problem:
            log.warning("cannot try for leadership: %s", reason, extra={"replica": replica_id()})
        self._last_problem = reason
        self._held = False
        self._close()

    def announce(self, message: dict[str, Any]) -> None:
        """NOTIFY the leader (best effort: a leader that misses it reconciles everything when it takes over)."""
        payload = json.dumps(message, default=str)
        if len(payload) > _MAX_PAYLOAD:
            payload = json.dumps({k: v for k, v in message.items() if k != "user_ids"}, default=str)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"), {"channel": self.channel, "payload": payload}
                )
        except Exception as exc:  # the write is recorded; the leader's next run picks it up
            log.warning("could not notify the leader: %s", _first_line(exc))

    def release(self) -> None:
        """Unlock (by closing the session) and stop listening."""
        self._held = False
        self._close()
        self._lock_engine.dispose()

    def _close(self) -> None:
        if self._fairy is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._fairy.invalidate()
            self._fairy = self._conn = None


def _lock_engine(engine: Engine) -> Engine:
    """An engine without pooling for the lock's own session, with keepalives so a dead peer is noticed."""
    from sqlalchemy.pool import NullPool

    url = make_url(engine.url.render_as_string(hide_password=False))
    args = {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
    }
    return create_engine(url, poolclass=NullPool, connect_args=args)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
