"""A slow-connection flood of the issue's size against `syncd serve` with its default limits, a normal client beside it.

    .venv/bin/python -m bench.slow_flood [--connections 20000] [--seconds 30] [--addresses 1 400] [--write-md]

Issue 14's probe held about 20,000 connections that send a request head and never finish it, and normal clients then
failed 46 of 49 requests. Here an attacker process opens `--connections` such connections to `syncd serve` (SQLite,
every `server:` limit at its default), each sending `GET /healthz HTTP/1.1` and one more header line every second,
and reopens every connection the server closes, so the pressure never drops. It speaks from `--addresses` loopback
addresses: 1 is the issue's probe (the per-address cap applies), 400 spreads the flood at 50 connections an address,
under that cap (a distributed attacker). Meanwhile a normal client on 127.0.0.1 sends `GET /healthz` on a new
connection every 0.1 s (5 s timeout) and counts what it gets. Both processes raise RLIMIT_NOFILE (the hard limit
too where allowed), and `serve` inherits it; under a lower hard limit the flood is as large as that allows (here
20,000: 19,744 connections). `--write-md` writes bench/results/slow_flood.md, which BENCHMARKS.md includes.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import selectors
import socket
import statistics
import tempfile
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.provisioning import MASTER, fake_litellm_process
from bench.push_latency import _percentile, serve_process
from bench.scim_bench import _free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "slow_flood.md"
HEAD = b"GET /healthz HTTP/1.1\r\nHost: syncd\r\n"


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards `wanted` (the hard limit too when allowed); the soft limit got."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _address(n: int, addresses: int) -> str:
    index = n % addresses
    return f"127.0.{2 + index // 250}.{1 + index % 250}"


def _open(port: int, address: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(3)
        sock.bind((address, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(HEAD)
        sock.setblocking(False)
        return sock
    except OSError:
        sock.close()
        return None


def attack(port: int, connections: int, addresses: int, seconds: float, ready: Any, report: Any) -> None:
    """The attacker: keep `connections` slow request heads open for `seconds`, reopening what the server closes."""
    raise_nofile(connections + 1024)
    selector = selectors.DefaultSelector()
    where: dict[socket.socket, str] = {}
    counts: Counter[str] = Counter()
    open_samples: list[int] = []

    def add(address: str) -> None:
        sock = _open(port, address)
        if sock is None:
            counts["connect_failed"] += 1
            return
        counts["opened"] += 1
        where[sock] = address
        selector.register(sock, selectors.EVENT_READ)

    started = time.monotonic()
    for n in range(connections):
        add(_address(n, addresses))
    counts["initial_open_s_x1000"] = round((time.monotonic() - started) * 1000)
    counts["initial_open"] = len(where)
    ready.set()
    deadline, trickle = time.monotonic() + seconds, time.monotonic() + 1
    lost: list[str] = []
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if data:
                counts["answered"] += 1  # a 4xx/5xx for the head: the server then closes
                continue
            counts["cut_by_server"] += 1
            selector.unregister(sock)
            lost.append(where.pop(sock))
            sock.close()
        for address in lost[:2000]:  # reopen what was cut, a bounded number per turn
            add(address)
        counts["reopened"] += min(len(lost), 2000)
        del lost[:2000]
        if time.monotonic() >= trickle:
            trickle += 1
            open_samples.append(len(where))
            for sock in list(where):
                with contextlib.suppress(OSError):
                    sock.send(b"X-Slow: 1\r\n")
    for sock in where:
        sock.close()
    report.put({**counts, "open_min": min(open_samples or [0]), "open_median": statistics.median(open_samples or [0])})


def _server_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmHWM", "VmRSS"))}
    return {"peak_rss_mib": kib["VmHWM"] // 1024, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _poll(base: str, seconds: float, pid: int) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    fds: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status = httpx.get(f"{base}/healthz", timeout=5).status_code
            outcomes["ok" if status == 200 else str(status)] += 1
        except httpx.TimeoutException:
            outcomes["timeout"] += 1
        except httpx.HTTPError as exc:
            outcomes[type(exc).__name__] += 1
        latencies.append(time.monotonic() - started)
        fds.append(_server_figures(pid)["fds"])
        time.sleep(0.1)
    total = sum(outcomes.values())
    return {
        "requests": total,
        "ok": outcomes["ok"],
        "success_rate": round(outcomes["ok"] / total, 4) if total else 0.0,
        "failures": {k: v for k, v in outcomes.items() if k != "ok"},
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(_percentile(latencies, 0.95), 3),
        "max_s": round(max(latencies), 3),
        "server_fds_max": max(fds),
    }


def measure(connections: int, addresses: int, seconds: float, log: Any = print) -> dict[str, Any]:
    """One flood of `connections` from `addresses` addresses for `seconds`, the normal client's view of it."""
    limit = raise_nofile(connections + 1024)
    if connections > limit - 256:  # the attacker needs a few descriptors more than its sockets
        log(f"  RLIMIT_NOFILE is {limit} here (the hard limit): {limit - 256} connections instead of {connections}")
        connections = limit - 256
    with fake_litellm_process(0.0) as fake_url, tempfile.TemporaryDirectory(prefix="syncd-bench-flood-") as folder:
        port = _free_port()
        config = {
            "database": {"url": f"sqlite:///{folder}/syncd.db"},
            "litellm": {"url": fake_url, "master_key": MASTER},
            "server": {"host": "127.0.0.1", "port": port},  # every limit at its default
        }
        with serve_process(config, Path(folder)) as (base, process):
            before = _poll(base, 3, process.pid)
            context = multiprocessing.get_context("spawn")
            ready, report = context.Event(), context.Queue()
            attacker = context.Process(target=attack, args=(port, connections, addresses, seconds + 5, ready, report))
            attacker.start()
            ready.wait(300)
            during = _poll(base, seconds, process.pid)
            flood = report.get(timeout=120)
            attacker.join(30)
            after = _poll(base, 3, process.pid)
            server = _server_figures(process.pid)
    result = {
        "connections": connections,
        "addresses": addresses,
        "seconds": seconds,
        "nofile": limit,
        "before": before,
        "during": during,
        "after": after,
        "flood": flood,
        "server": server,
    }
    log(f"  {connections} slow connections from {addresses} address(es): {during}")
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """The section of BENCHMARKS.md (bench/results/slow_flood.md)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    intro = (
        f"`python -m bench.slow_flood` ({when}, the shared 2-core machine): `syncd serve` on SQLite with every "
        "`server:` limit at its default (`header_timeout_s` 10, `max_connections` 1,000, `max_connections_per_client` "
        "64, `rate_limit_per_s` 200), an attacker process holding slow request heads open (one header line a second, "
        "every connection the server cuts reopened at once), and a normal client on 127.0.0.1 sending `GET /healthz` "
        "on a new connection every 0.1 s (5 s timeout) while it lasts. The issue's probe: ~20,000 such connections, "
        "normal clients failed 46 of 49 requests. CI (`tests/reliability/test_doors.py`) keeps a smaller flood."
    )
    lines = [
        "## Slow-connection flood (issue 14)",
        "",
        *textwrap.wrap(intro, 118, break_on_hyphens=False),
        "",
        "| slow connections (attempted) | from addresses | open at the attacker (median, each second) |"
        " cut by the server, reopened | normal client ok |"
        " latency p50 / p95 / max | failures | server peak RSS, fds max |",
        "|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        d, f, s = r["during"], r["flood"], r["server"]
        failures = ", ".join(f"{k} {v}" for k, v in sorted(d["failures"].items())) or "none"
        lines.append(
            f"| {r['connections']:,} | {r['addresses']} | {f['open_median']:,.0f} | "
            f"{f.get('cut_by_server', 0):,}, {f.get('reopened', 0):,} | {d['ok']}/{d['requests']} "
            f"({100 * d['success_rate']:.1f} %) | {d['p50_s']} / {d['p95_s']} / {d['max_s']} s | {failures} | "
            f"{s['peak_rss_mib']} MiB, {d['server_fds_max']:,} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the floods and print (and with --write-md keep) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--addresses", type=int, nargs="+", default=[1, 400])
    parser.add_argument("--write-md", action="store_true")
    args = parser.parse_args(argv)
    results = [measure(args.connections, n, args.seconds) for n in args.addresses]
    text = markdown(results)
    print(text)
    if args.write_md:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
