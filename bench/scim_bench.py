"""SCIM service provider against the reference server (scim2-server, in memory), same requests, same machine.

Run: `.venv/bin/python bench/scim_bench.py [--users 10000] [--groups 500] [--samples 1000]` (needs the PostgreSQL
of the test setup on 127.0.0.1:5432 and `pip install scim2-server`). Both servers are loaded with the same users and
groups, then a sequential httpx client on loopback measures POST /Users, a `userName eq` filter, a PATCH and a list
of count=100 on each, the two servers taking turns request by request so that both see the same load on the
machine. Targets (issue 4): at least the reference's throughput on each, and the list under 20 ms median. uvicorn
uses httptools and uvloop when they are installed (`uvicorn[standard]`), as `syncd serve` does.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

TOKEN = "bench-token"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def serve_syncd(database_url: str, port: int) -> None:
    """Serve syncd's SCIM router (the child process of the benchmark)."""
    import uvicorn
    from fastapi import FastAPI

    from syncd.scim import build_scim_router
    from syncd.settings import settings_from_dict
    from syncd.store import make_engine, upgrade

    tokens = [{"name": "bench", "token": TOKEN}]
    settings = settings_from_dict({"database": {"url": database_url}, "scim": {"enabled": True, "tokens": tokens}})
    engine = make_engine(database_url, pool_size=10)
    upgrade(engine)
    app = FastAPI()
    app.include_router(build_scim_router(settings, engine), prefix="/scim/v2")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server(command: list[str], url: str) -> Iterator[str]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/ServiceProviderConfig", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def _postgres_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"syncd_scim_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _user(n: int) -> dict[str, object]:
    return {
        "schemas": [USER],
        "userName": f"user{n:06}@example.com",
        "externalId": f"ext-{n}",
        "displayName": f"User {n}",
        "name": {"givenName": "User", "familyName": f"N{n}"},
        "emails": [{"value": f"user{n:06}@example.com", "type": "work", "primary": True}],
        "active": True,
    }


class Measured:
    """Latencies of one operation, in seconds."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def time(self, call: Callable[[], httpx.Response], *expected: int) -> httpx.Response:
        started = time.perf_counter()
        response = call()
        self.samples.append(time.perf_counter() - started)
        if response.status_code not in expected:
            raise RuntimeError(
                f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
            )
        return response

    def row(self) -> tuple[float, float, float]:
        """(median ms, p95 ms, requests per second)."""
        ordered = sorted(self.samples)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        return statistics.median(ordered) * 1000, p95 * 1000, len(ordered) / sum(ordered)


OPERATIONS = ("POST /Users", "userName eq", "PATCH", "list 100")


def _load_all(
    clients: dict[str, httpx.Client], users: int, groups: int, results: dict[str, dict[str, Measured]]
) -> dict[str, list[str]]:
    """The same users, then groups, posted to every server in turns (the POSTs of users are measured)."""
    ids: dict[str, list[str]] = {name: [] for name in clients}
    for n in range(users):
        for name, client in clients.items():
            created = results[name]["POST /Users"].time(lambda c=client, n=n: c.post("/Users", json=_user(n)), 201)
            ids[name].append(created.json()["id"])
    rng = random.Random(7)
    for g in range(groups):
        positions = rng.sample(range(users), 20)
        for name, client in clients.items():
            members = [{"value": ids[name][p]} for p in positions]
            body = {"schemas": [GROUP], "displayName": f"group-{g}", "members": members}
            created = client.post("/Groups", json=body)
            if created.status_code != 201:
                raise RuntimeError(f"POST /Groups: {created.status_code} {created.text}")
    return ids


def _client(url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def run(
    urls: dict[str, str], users: int, groups: int, samples: int
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Load every server with the data set, then measure each operation `samples` times (the list: samples / 5).

    The servers take turns request by request, so that both see the same load on the machine.
    """
    clients = {name: _client(url) for name, url in urls.items()}
    results = {name: {operation: Measured() for operation in OPERATIONS} for name in urls}
    try:
        ids = _load_all(clients, users, groups, results)
        rng = random.Random(11)
        for _ in range(samples):
            query = {"filter": f'userName eq "user{rng.randrange(users):06}@example.com"'}
            for name, client in clients.items():
                found = results[name]["userName eq"].time(lambda c=client, q=query: c.get("/Users", params=q), 200)
                assert found.json()["totalResults"] == 1
        for i in range(samples):
            body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": f"t{i}"}]}
            position = rng.randrange(users)
            for name, client in clients.items():
                target = ids[name][position]
                call = lambda c=client, t=target, b=body: c.patch(f"/Users/{t}", json=b)  # noqa: E731
                results[name]["PATCH"].time(call, 200, 204)
        for _ in range(max(samples // 5, 20)):
            params = {"startIndex": rng.randrange(1, users - 100), "count": 100}
            for name, client in clients.items():
                page = results[name]["list 100"].time(lambda c=client, p=params: c.get("/Users", params=p), 200)
                assert len(page.json()["Resources"]) == 100
    finally:
        for client in clients.values():
            client.close()
    return {name: {op: measured.row() for op, measured in table.items()} for name, table in results.items()}


def main() -> None:
    """Run both servers and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--serve", nargs=2, metavar=("DATABASE_URL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_syncd(args.serve[0], int(args.serve[1]))
        return
    reference = shutil.which("scim2-server") or str(Path(sys.executable).with_name("scim2-server"))
    with _postgres_database() as database_url:
        ours, theirs = _free_port(), _free_port()
        syncd_command = [sys.executable, __file__, "--serve", database_url, str(ours)]
        reference_command = [reference, "--port", str(theirs), "--bearer-token", TOKEN]
        with (
            _server(syncd_command, f"http://127.0.0.1:{ours}/scim/v2") as syncd_url,
            _server(reference_command, f"http://127.0.0.1:{theirs}") as reference_url,
        ):
            urls = {"syncd (PostgreSQL)": syncd_url, "scim2-server (memory)": reference_url}
            table = run(urls, args.users, args.groups, args.samples)
    _print(table, args)


def _print(table: dict[str, dict[str, tuple[float, float, float]]], args: argparse.Namespace) -> None:
    print(f"{args.users} users, {args.groups} groups of 20 members; sequential client on loopback")
    names = list(table)
    print(f"{'operation':<14}" + "".join(f"| {name:^32} " for name in names) + "| throughput")
    print(f"{'':<14}" + "".join(f"| {'median ms':>9} {'p95 ms':>9} {'req/s':>9}   " for _ in names) + "| ratio")
    for operation in next(iter(table.values())):
        cells = "".join(
            f"| {table[n][operation][0]:>9.2f} {table[n][operation][1]:>9.2f} {table[n][operation][2]:>9.0f}   "
            for n in names
        )
        ratio = table[names[0]][operation][2] / table[names[-1]][operation][2]
        print(f"{operation:<14}{cells}| {ratio:.2f}x")


if __name__ == "__main__":
    main()
