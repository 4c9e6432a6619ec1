"""SCIM under a steady load: an open-loop client sending a fixed rate of requests (default 200/s for 60 s).

Run: `.venv/bin/python bench/scim_load.py [--rate 200] [--seconds 60] [--database sqlite|postgresql]`. syncd's
SCIM app (create_app, as `syncd serve` builds it) runs under uvicorn in its own process over a fresh database
(PostgreSQL: a throwaway database on 127.0.0.1:5432, dropped afterwards). Requests are scheduled at fixed times
whatever the answers take (so a slow server shows as latency, not as a lower rate): 40% `userName eq` lookups,
20% POST /Users, 25% PATCH of a user, 15% PATCH adding or removing a group member. Prints a table: requests,
achieved rate, errors by status, and latency p50/p95/p99/max per kind and overall.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

TOKEN = "load-token"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def serve(database_url: str, port: int) -> None:
    """The child process: syncd's app with SCIM on, under uvicorn."""
    import uvicorn

    from syncd.app import create_app
    from syncd.metrics import Metrics
    from syncd.settings import settings_from_dict
    from syncd.store import make_engine, upgrade
    from syncd.store.repository import SyncStore

    settings = settings_from_dict(
        {"database": {"url": database_url}, "scim": {"enabled": True, "tokens": [{"name": "idp", "token": TOKEN}]}}
    )
    engine = make_engine(database_url)
    upgrade(engine)
    app = create_app(settings, store=SyncStore(engine), engine=engine, metrics=Metrics())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _database(kind: str, folder: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{folder}/scim-load.db", None
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"syncd_load_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin.url.set(database=name).render_as_string(hide_password=False), drop


class Load:
    """The open-loop generator and what it measured."""

    def __init__(self, base: str, rate: float, seconds: float, workers: int) -> None:
        self.base, self.rate, self.seconds = base, rate, seconds
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.local = threading.local()
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, int] = defaultdict(int)
        self.late = 0
        self.users: list[str] = []
        self.names: list[str] = []
        self.groups: list[str] = []

    def client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
            self.local.client = httpx.Client(base_url=self.base, headers=headers, timeout=30)
        return self.local.client

    def seed(self, users: int, groups: int) -> None:
        http = self.client()
        for i in range(users):
            name = f"seed{i}@example.com"
            self.users.append(http.post("/Users", json={"schemas": [USER], "userName": name}).json()["id"])
            self.names.append(name)
        for i in range(groups):
            body = {"schemas": [GROUP], "displayName": f"load-{i}", "members": [{"value": u} for u in self.users[:50]]}
            self.groups.append(http.post("/Groups", json=body).json()["id"])

    def one(self, kind: str, rng: random.Random) -> None:
        http = self.client()
        started = time.perf_counter()
        if kind == "lookup":
            answer = http.get("/Users", params={"filter": f'userName eq "{rng.choice(self.names)}"'})
        elif kind == "create":
            answer = http.post("/Users", json={"schemas": [USER], "userName": f"{uuid.uuid4().hex}@example.com"})
        elif kind == "patch user":
            op = {"op": "replace", "value": {"displayName": f"n{rng.random():.5f}"}}
            answer = http.patch(f"/Users/{rng.choice(self.users)}", json={"schemas": [PATCH], "Operations": [op]})
        else:
            uid, gid = rng.choice(self.users), rng.choice(self.groups)
            op = (
                {"op": "add", "path": "members", "value": [{"value": uid}]}
                if rng.random() < 0.5
                else {"op": "remove", "path": f'members[value eq "{uid}"]'}
            )
            answer = http.patch(f"/Groups/{gid}", json={"schemas": [PATCH], "Operations": [op]})
        took = time.perf_counter() - started
        with self.lock:
            self.latency[kind].append(took)
            self.statuses[str(answer.status_code)] += 1

    def run(self) -> float:
        rng = random.Random(7)
        kinds = ["lookup"] * 8 + ["create"] * 4 + ["patch user"] * 5 + ["patch group"] * 3
        total = int(self.rate * self.seconds)
        start = time.perf_counter()
        futures = []
        for n in range(total):
            due = start + n / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                self.late += 1
            futures.append(self.pool.submit(self.one, rng.choice(kinds), random.Random(n)))
        for future in futures:
            future.result()
        return time.perf_counter() - start


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--serve", nargs=2, metavar=("DATABASE_URL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="scim-load-"))
    url, drop = _database(args.database, folder)
    port = _free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", url, str(port)])
    base = f"http://127.0.0.1:{port}/scim/v2"
    try:
        load = Load(base, args.rate, args.seconds, args.workers)
        deadline = time.monotonic() + 30
        while True:
            try:
                if load.client().get("/ServiceProviderConfig").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the SCIM server did not start")
            time.sleep(0.1)
        load.seed(users=500, groups=10)
        elapsed = load.run()
        _report(load, args, elapsed)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if drop is not None:
            drop()


def _report(load: Load, args: argparse.Namespace, elapsed: float) -> None:
    everything = [v for values in load.latency.values() for v in values]
    print(f"SCIM load: {args.rate:g} req/s for {args.seconds:g} s on {args.database}, {args.workers} client threads")
    print(f"requests {len(everything)}, achieved {len(everything) / elapsed:.1f} req/s, late sends {load.late}")
    print(f"statuses {dict(sorted(load.statuses.items()))}")
    print(f"{'kind':<12} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    for kind, values in [*sorted(load.latency.items()), ("all", everything)]:
        print(
            f"{kind:<12} {len(values):>6} {_pct(values, 0.5):>8.1f} {_pct(values, 0.95):>8.1f} "
            f"{_pct(values, 0.99):>8.1f} {max(values) * 1000:>8.1f} {statistics.fmean(values) * 1000:>8.1f}"
        )


if __name__ == "__main__":
    main()
