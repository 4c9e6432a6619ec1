"""A no-op sync and a drift check of N managed users against the fake LiteLLM, counting the calls each makes.

Run: `.venv/bin/python bench/noop_sync.py [--users 10000]`. Targets (issue 2): the no-op sync makes zero write calls
and no per-user reads; the drift check makes at most N/100 list calls.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter

from syncd.litellm import LiteLLMClient
from syncd.model import Group, Identity, Snapshot
from syncd.reconcile import ReconcileOptions, Reconciler
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

MASTER = "sk-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    app = create_fake_litellm(MASTER)
    fake = app.state.fake
    with tempfile.TemporaryDirectory() as folder, serve_in_thread(app) as url:
        engine = make_engine(f"sqlite:///{folder}/bench.db")
        upgrade(engine)
        store = SyncStore(engine)
        settings = settings_from_dict(
            {
                "database": {"url": f"sqlite:///{folder}/bench.db"},
                "litellm": {"url": url, "master_key": MASTER, "concurrency": args.concurrency},
                "mappings": [
                    {"group": "llm-users", "models": ["gpt-4o"], "max_budget": 10, "budget_duration": "monthly"}
                ],
            }
        )
        people = [
            Identity("corp", f"e{i}", f"user{i:06}", f"user{i}@example.com", f"User {i}") for i in range(args.users)
        ]
        store.record_snapshot(
            Snapshot("corp", people, [Group("corp", "g", "llm-users", None, frozenset(p.external_id for p in people))])
        )
        with LiteLLMClient(url, MASTER) as client:
            reconciler = Reconciler(settings, store, client)
            rows = []
            for label, drift in (("initial sync (creates)", False), ("no-op sync", False), ("drift check", True)):
                fake.reset_calls()
                started = time.perf_counter()
                report = reconciler.run(ReconcileOptions(drift_check=drift))
                seconds = time.perf_counter() - started
                calls = Counter(f"{c.method} {c.path}" for c in fake.calls)
                rows.append((label, seconds, report.plan.counts(), fake.write_calls(), calls))
    print(
        f"{args.users:,} managed users against the fake LiteLLM, concurrency {args.concurrency}, {os.cpu_count()} cores"
    )
    print(f"{'run':<24}{'seconds':>9}{'writes':>8}{'/user/list':>12}{'/user/info':>12}  changes")
    for label, seconds, counts, writes, calls in rows:
        changed = {k: v for k, v in counts.items() if v}
        print(
            f"{label:<24}{seconds:>9.2f}{writes:>8}{calls['GET /user/list']:>12}{calls['GET /user/info']:>12}  "
            f"{changed or 'none'}"
        )
    noop, drift = rows[1], rows[2]
    print(
        f"no-op sync: {noop[3]} write calls and {noop[4]['GET /user/list'] + noop[4]['GET /user/info']} reads "
        "(target 0 and 0)"
    )
    print(f"drift check: {drift[4]['GET /user/list']} list calls (target at most {args.users // 100})")


if __name__ == "__main__":
    main()
