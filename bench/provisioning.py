"""Initial provisioning: N new users created in the fake LiteLLM with added latency per call, at several concurrencies.

Run: `.venv/bin/python bench/provisioning.py [--users 10000] [--latency-ms 20] [--concurrency 1 8 32]`.
Each concurrency gets a fresh store and a fresh fake LiteLLM in its own process (as a real proxy would be: its CPU
does not compete with syncd's for the GIL).
Target (issue 8): at concurrency 8, at least 6 times the users per second of concurrency 1.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from syncd.litellm import LiteLLMClient
from syncd.model import Group, Identity, Snapshot
from syncd.reconcile import ReconcileOptions, Reconciler
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore

MASTER = "sk-bench"


@contextmanager
def fake_litellm_process(latency_s: float) -> Iterator[str]:
    """`python -m syncd.testing.fake_litellm` on a free port; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "syncd.testing.fake_litellm",
        "--port",
        str(port),
        "--master-key",
        MASTER,
        "--latency-s",
        str(latency_s),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.025)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def provision(users: int, latency_s: float, concurrency: int) -> dict[str, Any]:
    """One initial sync of `users` people; returns its figures."""
    with tempfile.TemporaryDirectory() as folder, fake_litellm_process(latency_s) as url:
        database = f"sqlite:///{folder}/bench.db"
        engine = make_engine(database)
        upgrade(engine)
        store = SyncStore(engine)
        people = [Identity("corp", f"e{i}", f"user{i:06}", f"user{i}@example.com") for i in range(users)]
        group = Group("corp", "g", "llm-users", None, frozenset(p.external_id for p in people))
        store.record_snapshot(Snapshot("corp", people, [group]))
        settings = settings_from_dict(
            {
                "database": {"url": database},
                "litellm": {"url": url, "master_key": MASTER, "concurrency": concurrency},
                "mappings": [{"group": "llm-users", "models": ["gpt-4o"], "max_budget": 10}],
            }
        )
        with LiteLLMClient(url, MASTER) as client:
            started = time.perf_counter()
            report = Reconciler(settings, store, client).run(ReconcileOptions(drift_check=False))
            seconds = time.perf_counter() - started
            created = client.list_users(page=1, page_size=1).total
        engine.dispose()
    assert report.status == "success" and created == users, (report.status, created)
    return {"concurrency": concurrency, "seconds": seconds, "users_per_s": users / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    rows = [provision(args.users, args.latency_ms / 1000, c) for c in args.concurrency]
    base = rows[0]["users_per_s"]
    print(
        f"initial provisioning of {args.users:,} users, {args.latency_ms:g} ms added per LiteLLM call, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'concurrency':>11}{'seconds':>10}{'users/s':>10}{'speedup':>9}")
    for row in rows:
        print(
            f"{row['concurrency']:>11}{row['seconds']:>10.1f}{row['users_per_s']:>10.1f}"
            f"{row['users_per_s'] / base:>8.1f}x"
        )


if __name__ == "__main__":
    main()
