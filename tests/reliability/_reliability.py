"""Shared pieces of the reliability suite: a store + fake LiteLLM world, the scenario people, end-state views, figures.

Figures: every test that measures something calls `figures(name, **values)`; they are printed (run with `-s` to see
them) and, when `SYNCD_RELIABILITY_FIGURES` names a file, appended to it as JSON lines (RELIABILITY.md is built from
those).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import func, select

from syncd.litellm import LiteLLMClient, LiteLLMError
from syncd.model import Group, Identity, Snapshot
from syncd.reconcile import ReconcileOptions, Reconciler, RunReport
from syncd.settings import Settings, settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.store.tables import audit_log, changes
from syncd.testing.fake_litellm import FakeLiteLLM

__all__ = [
    "MAPPINGS",
    "MASTER",
    "FaultyProxy",
    "World",
    "end_state",
    "figures",
    "flip_outage_after",
    "people",
    "run_syncd",
    "wait_for",
]

MASTER = "sk-reliability-master-7c41d2"
#: people in ou=people of the reliability slapd: past the 1,000 entries a non-paged or capped search returns
DIRECTORY_PEOPLE = 1_100
MAPPINGS: list[dict[str, Any]] = [
    {"group": "llm-users", "models": ["gpt-4o"], "max_budget": 10, "budget_duration": "monthly"},
    {
        "group": "llm-power",
        "models": ["claude-3-5-sonnet"],
        "max_budget": 100,
        "budget_duration": "yearly",
        "tpm_limit": 50000,
        "auto_create_keys": True,
    },
    {"group": "llm-admins", "role": "proxy_admin", "auto_create_keys": True},
]
_GROUPS = (["llm-users"], ["llm-users", "llm-power"], ["llm-power"], ["llm-admins", "llm-users"])
#: no guard in the fault scenarios: they deactivate a fifth of everyone on purpose
NO_GUARD = {"max_deactivations": 1_000_000, "max_deactivation_ratio": 1.0}


def people(count: int, *, start: int = 0) -> dict[str, dict[str, Any]]:
    """`count` people u00000... spread over the mapped groups (half of them get a key on creation)."""
    return {f"u{i:05d}": {"groups": list(_GROUPS[i % 4])} for i in range(start, start + count)}


def figures(name: str, **values: Any) -> None:
    """Print a measurement and append it to $SYNCD_RELIABILITY_FIGURES (JSON lines) when set."""
    line = json.dumps({"test": name, **values}, sort_keys=True, default=str)
    print(f"\nFIGURES {line}")
    target = os.environ.get("SYNCD_RELIABILITY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, *, every_s: float = 0.005) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


class World:
    """A store, a fake LiteLLM served over HTTP and a client wired as `syncd sync` wires them."""

    def __init__(self, database_url: str, litellm_url: str, fake: FakeLiteLLM, **client: Any) -> None:
        self.fake, self.url, self.database_url = fake, litellm_url, database_url
        engine = make_engine(database_url)
        upgrade(engine)
        self.store = SyncStore(engine)
        self.attempts: Counter[str] = Counter()  # client attempts by outcome: ok, retryable, terminal
        self._lock = threading.Lock()
        options = {"max_retries": 3, "backoff_base_s": 0.002, "backoff_max_s": 0.05, "timeout_s": 5.0, **client}
        self.client = LiteLLMClient(litellm_url, MASTER, on_call=self._count, **options)
        self.settings = self.configure()

    def _count(self, endpoint: str, status: int | None, seconds: float) -> None:
        kind = "ok" if status is not None and status < 400 else "terminal"
        if status is None or status >= 500 or status == 429:
            kind = "retryable"
        with self._lock:
            self.attempts[kind] += 1

    def configure(self, **extra: Any) -> Settings:
        data: dict[str, Any] = {
            "database": {"url": self.database_url},
            "litellm": {"url": self.url, "master_key": MASTER, "concurrency": 8},
            "mappings": MAPPINGS,
            "policy": NO_GUARD,
        }
        for key, value in extra.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        self.config = data
        self.settings = settings_from_dict(data)
        return self.settings

    def record(self, everyone: dict[str, dict[str, Any]]) -> None:
        """Record a full snapshot of source corp: user_id -> {groups: [...], active: bool}."""
        identities = [
            Identity("corp", f"ext-{uid}", uid, f"{uid}@example.com", None, p.get("active", True))
            for uid, p in everyone.items()
        ]
        members: dict[str, set[str]] = {}
        for uid, person in everyone.items():
            for group in person.get("groups", ()):
                members.setdefault(group, set()).add(f"ext-{uid}")
        groups = [Group("corp", f"g-{n}", n, None, frozenset(m)) for n, m in sorted(members.items())]
        self.store.record_snapshot(Snapshot("corp", identities, groups))

    def sync(self, **options: Any) -> RunReport:
        options.setdefault("drift_check", False)
        return Reconciler(self.settings, self.store, self.client).run(ReconcileOptions(**options))

    def sync_until_converged(self, max_runs: int, *, deadline_s: float = 120.0) -> dict[str, int]:
        """Run until a run succeeds with an empty plan; count runs that failed outright or partly.

        A run that fails outright (LiteLLM down while planning) is retried after a short pause, as the daemon's
        scheduler would; everything is bounded by `max_runs` and `deadline_s`.
        """
        runs = outright = partly = 0
        deadline = time.monotonic() + deadline_s
        while runs < max_runs and time.monotonic() < deadline:
            runs += 1
            try:
                report = self.sync()
            except LiteLLMError:
                outright += 1  # LiteLLM failed while planning: nothing applied, the next run resumes
                time.sleep(0.1)  # the scheduler's retry interval, not a wait for a condition
                continue
            if report.status == "success" and report.plan.empty:
                return {"runs": runs, "runs_failed_outright": outright, "runs_failed_partly": partly}
            partly += report.status == "failed"
        raise AssertionError(f"not converged after {runs} runs")

    def audit_counts(self, after_run: int) -> Counter[str]:
        """Done changes per user and action (a suspension and its block_keys are two) recorded after `after_run`."""
        query = (
            select(audit_log.c.key, audit_log.c.action, func.count())
            .where(audit_log.c.run_id > after_run)
            .group_by(audit_log.c.key, audit_log.c.action)
        )
        with self.store.engine.connect() as conn:
            return Counter({f"{key} {action}": count for key, action, count in conn.execute(query)})

    def failed_keys(self, after_run: int) -> set[str]:
        """Users with a change journaled as failed by runs after `after_run`."""
        query = select(changes.c.key).where(changes.c.run_id > after_run, changes.c.status == "failed")
        with self.store.engine.connect() as conn:
            return set(conn.scalars(query))

    def last_run_id(self) -> int:
        runs = self.store.recent_runs(1)
        return runs[0].id if runs else 0

    def close(self) -> None:
        self.client.close()
        self.store.engine.dispose()


def end_state(fake: FakeLiteLLM) -> dict[str, tuple[Any, ...]]:
    """What matters of each LiteLLM user, independent of generated ids: fields, scim_active, key blocked flags."""
    return {
        uid: (
            u["user_email"],
            u["user_role"],
            tuple(sorted(u["models"])),
            u["max_budget"],
            u["budget_duration"],
            u["tpm_limit"],
            u["metadata"].get("scim_active"),
            (u["metadata"].get("syncd") or {}).get("external_id"),
            tuple(sorted(bool(k["blocked"]) for k in fake.keys_of(uid))),
        )
        for uid, u in fake.users.items()
    }


@contextmanager
def flip_outage_after(fake: FakeLiteLLM, calls: int, hold_s: float) -> Iterator[dict[str, Any]]:
    """From another thread: a full outage once the fake has answered `calls` calls, for `hold_s`, then recovery."""
    seen: dict[str, Any] = {"started_at_call": None, "calls_refused": 0}
    stop = threading.Event()

    def flip() -> None:
        while len(fake.calls) < calls:
            if stop.wait(0.002):
                return
        seen["started_at_call"] = len(fake.calls)
        fake.faults.outage = True
        stop.wait(hold_s)
        fake.faults.outage = False
        seen["calls_refused"] = sum(1 for c in fake.calls[seen["started_at_call"] :] if c.status == 503)

    thread = threading.Thread(target=flip, name="outage", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=hold_s + 5)
        fake.faults.outage = False


class FaultyProxy:
    """A TCP proxy on loopback that counts the bytes a server sends and, past `at_byte`, cuts, stalls or calls back.

    mode "pass": forward everything; "cut": close both ends; "stall": keep both ends open and silent (a hung server);
    "call": run `callback` once (e.g. kill the server) and keep forwarding what is left; "flaky": close the
    connection instead of forwarding an answer, at random (seeded) with probability `rate` per chunk.
    """

    def __init__(self, upstream_port: int) -> None:
        import socket

        self.upstream_port = upstream_port
        self.mode, self.at_byte, self.callback = "pass", 0, None
        self.down_bytes = self.resets = 0
        self.rate, self._rng = 0.0, random.Random(0)
        self.fired = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[Any] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def arm(
        self,
        mode: str,
        at_byte: int = 0,
        callback: Callable[[], None] | None = None,
        *,
        rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Set the fault for what follows; the byte count starts again from zero."""
        with self._lock:
            self.mode, self.at_byte, self.callback, self.down_bytes = mode, at_byte, callback, 0
            self.rate, self._rng = rate, random.Random(seed)
            self.fired.clear()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: Any, target: Any, down: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if down and self._fault(len(chunk)):
                    return
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(source, target)

    def _fault(self, size: int) -> bool:
        """True when the connection must stop forwarding now."""
        with self._lock:
            self.down_bytes += size
            if self.mode == "flaky":
                reset = self._rng.random() < self.rate
                self.resets += reset
                return reset
            crossed = self.mode != "pass" and self.down_bytes >= self.at_byte and not self.fired.is_set()
            if crossed:
                self.fired.set()
            mode, callback = self.mode, self.callback
        if mode == "stall" and self.fired.is_set():
            self._release.wait(120)
            return True
        if crossed and mode == "call" and callback is not None:
            callback()
        return crossed and mode == "cut"

    @staticmethod
    def _close(*sockets: Any) -> None:
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(2)  # SHUT_RDWR: wakes the other pump's recv and sends the FIN now
            with suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._release.set()
        self._close(self._listener, *self._sockets)


def run_syncd(
    folder: Any, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m syncd ARGS --config FOLDER/syncd.yaml`, as an operator runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args, "--config", str(folder / "syncd.yaml")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SYNCD_LOG_LEVEL": "INFO", **(env or {})},
        timeout=timeout_s,
        cwd=folder,
    )
