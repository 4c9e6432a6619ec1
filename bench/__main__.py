"""Every benchmark side by side: `python -m bench [--quick] [--repeat N] [--only SECTION ...]`.

Runs, in this order: initial provisioning (bench/provisioning.py), steady state at 100,000 users with the raw ldap3
search beside it (bench/steady.py), scaling of the no-op sync (10k, 30k, and the 100k of steady state), plan at
100,000 users (bench/plan_bench.py), SCIM against scim2-server (bench/scim_bench.py), and the SCIM-to-LiteLLM push
latency through `syncd serve` (bench/push_latency.py). Prints one table per section, then writes BENCHMARKS.md,
bench/results/results.json (every raw figure) and bench/results/benchmarks.png. `--quick` runs smaller sizes in a few
minutes; its figures are not comparable to the targets (which are for the full sizes), and it writes to
bench/results/quick/ and leaves BENCHMARKS.md alone unless `--write-md` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = ("steady", "scaling", "plan", "scim", "push", "provisioning")  # the longest, least telling last

FULL = {
    "provisioning": {"users": 10_000, "latency_ms": 20.0, "concurrency": [1, 8, 32]},
    "steady": {"users": 100_000, "groups": 2_000},
    "scaling": {"users": [10_000, 30_000]},  # and the steady-state size
    "plan": {"users": 100_000, "changed": 0.05},
    "scim": {"users": 10_000, "groups": 500, "samples": 1_000},
    "push": {"samples": 40, "latency_ms": 20.0},
}
QUICK = {
    "provisioning": {"users": 1_000, "latency_ms": 20.0, "concurrency": [1, 8, 32]},
    "steady": {"users": 20_000, "groups": 400},
    "scaling": {"users": [5_000, 10_000]},
    "plan": {"users": 100_000, "changed": 0.05},
    "scim": {"users": 1_000, "groups": 50, "samples": 200},
    "push": {"samples": 10, "latency_ms": 20.0},
}


def log(message: str) -> None:
    """Progress, on stderr."""
    print(message, file=sys.stderr, flush=True)


def machine(quick: bool) -> dict[str, Any]:
    """Cores, CPU model, date, Python, and whether this was the quick variant."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory = f"{int(total.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory": memory,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "quick": quick,
    }


# -- sections -------------------------------------------------------------------------------------------------------
def run_provisioning(cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Each repeat runs every concurrency in turn; the speedup is taken within a repeat, then the median."""
    from bench.provisioning import provision

    runs: list[list[dict[str, Any]]] = []
    for r in range(repeat):
        rows = []
        for concurrency in cfg["concurrency"]:
            row = provision(cfg["users"], cfg["latency_ms"] / 1000, concurrency)
            rows.append(row)
            log(f"  run {r + 1}, concurrency {concurrency}: {row['users_per_s']:.1f} users/s")
        base = rows[0]["users_per_s"]
        for row in rows:
            row["speedup"] = row["users_per_s"] / base
        runs.append(rows)
    table = []
    for i, concurrency in enumerate(cfg["concurrency"]):
        table.append(
            {
                "concurrency": concurrency,
                "seconds": statistics.median(run[i]["seconds"] for run in runs),
                "users_per_s": statistics.median(run[i]["users_per_s"] for run in runs),
                "speedup": statistics.median(run[i]["speedup"] for run in runs),
            }
        )
    return {**cfg, "repeat": repeat, "rows": table, "runs": runs}


def run_steady(cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    """The no-op sync and the incremental at the steady-state size."""
    from bench.steady import measure_scale

    return measure_scale(cfg["users"], cfg["groups"], repeat, with_incremental=True, log=log)


def run_scaling(cfg: dict[str, Any], repeat: int, steady: dict[str, Any] | None) -> dict[str, Any]:
    """The same no-op sync at smaller sizes (groups in the same proportion as steady state)."""
    from bench.steady import measure_scale

    points = []
    for users in cfg["users"]:
        points.append(measure_scale(users, max(20, users // 50), repeat, with_incremental=False, log=log))
    if steady is not None:
        points.append({k: v for k, v in steady.items() if not k.startswith("incremental")})
    points.sort(key=lambda p: p["users"])
    return {"points": points}


def run_plan(cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    """plan_bench's two scenarios, each in a fresh child process, `repeat` times."""
    from bench.plan_bench import _child

    rows = []
    for name in ("vs-store", "vs-litellm"):
        runs = [_child(name, cfg["users"], cfg["changed"]) for _ in range(repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("mapping_s", "plan_s", "total_s", "peak_rss_mib")}
        rows.append({"scenario": name, "changes": runs[0]["changes"], **med, "runs": runs})
        log(f"  {name}: {med['total_s']:.2f} s")
    return {**cfg, "repeat": repeat, "rows": rows}


def run_scim(cfg: dict[str, Any]) -> dict[str, Any]:
    """scim_bench.py's run: syncd's SCIM router on PostgreSQL and scim2-server, request by request in turn."""
    from bench import scim_bench

    reference = shutil.which("scim2-server") or str(Path(sys.executable).with_name("scim2-server"))
    with scim_bench._postgres_database() as database_url:
        ours, theirs = scim_bench._free_port(), scim_bench._free_port()
        syncd_command = [sys.executable, scim_bench.__file__, "--serve", database_url, str(ours)]
        reference_command = [reference, "--port", str(theirs), "--bearer-token", scim_bench.TOKEN]
        with (
            scim_bench._server(syncd_command, f"http://127.0.0.1:{ours}/scim/v2") as syncd_url,
            scim_bench._server(reference_command, f"http://127.0.0.1:{theirs}") as reference_url,
        ):
            urls = {"syncd": syncd_url, "scim2-server": reference_url}
            table = scim_bench.run(urls, cfg["users"], cfg["groups"], cfg["samples"])
    rows = {
        name: {op: {"median_ms": m, "p95_ms": p, "req_s": r} for op, (m, p, r) in ops.items()}
        for name, ops in table.items()
    }
    return {**cfg, "rows": rows}


def run_push(cfg: dict[str, Any]) -> dict[str, Any]:
    """push_latency.py's measurement."""
    from bench.push_latency import measure

    return measure(cfg["samples"], cfg["latency_ms"] / 1000, log=log)


# -- tables ---------------------------------------------------------------------------------------------------------
def tables(results: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(section title, note, markdown table lines) for every section present."""
    out = []
    m = results["machine"]
    rep = results["repeat"]
    if "provisioning" in results:
        p = results["provisioning"]
        lines = ["| concurrency | seconds | users/s | speedup |", "|---:|---:|---:|---:|"]
        lines += [
            f"| {r['concurrency']} | {r['seconds']:.1f} | {r['users_per_s']:.1f} | {r['speedup']:.2f}x |"
            for r in p["rows"]
        ]
        note = (
            f"{p['users']:,} new users created in the fake LiteLLM (own process) with {p['latency_ms']:g} ms added "
            f"per call; fresh SQLite store each time; median of {p['repeat']} runs, speedup taken within each run."
        )
        out.append(("Initial provisioning", note, lines))
    if "steady" in results:
        s = results["steady"]
        lines = [
            "| run | wall s | peak RSS MiB | LiteLLM writes | ratio to raw |",
            "|---|---:|---:|---:|---:|",
            f"| (a) raw ldap3 paged search (users + groups, streamed) | {s['raw_s']:.2f} | {s['raw_rss_mib']:.0f} "
            "| - | 1.00 |",
            f"| (b) `syncd sync` no-op, end to end (subprocess) | {s['sync_s']:.2f} | {s['sync_rss_mib']:.0f} | "
            f"{s['sync_writes']} (and {s['sync_reads']} reads) | {s['ratio']:.2f} |",
        ]
        if "incremental_s" in s:
            lines.append(
                f"| (c) incremental pull after 10 changes + reconcile of everyone (serve before 165c914) | "
                f"{s['incremental_s']:.2f} | "
                f"{s['incremental_rss_mib']:.0f} (process) | {s['incremental_writes']:.0f} | - |"
            )
        if "targeted_s" in s:
            lines.append(
                f"| (d) incremental pull after 10 changes + reconcile of the {s['targeted_users']:.0f} users it "
                f"changed (serve's path since 165c914) | {s['targeted_s']:.2f} | - | {s['targeted_writes']:.0f} | - |"
            )
        note = (
            f"{s['users']:,} users, {s['groups']:,} groups + all-staff in a real slapd; {s['managed']:,} managed users "
            f"already in the store and the fake (seeded from the desired state, see below); median of "
            f"{len(s['runs'])} runs (peak RSS: the largest), ratio: median of the per-run ratios."
        )
        if "incremental_s" in s:
            note += (
                f" (c): pull and record {s['incremental_pull_s']:.2f} s, reconcile of everyone "
                f"{s['incremental_reconcile_s']:.2f} s."
            )
        if "targeted_s" in s:
            note += (
                f" (d): pull and record {s['targeted_pull_s']:.2f} s, targeted reconcile "
                f"{s['targeted_reconcile_s']:.2f} s."
            )
        out.append(("Steady state", note, lines))
    if "scaling" in results:
        pts = results["scaling"]["points"]
        lines = [
            "| users | groups | memberships | raw search s | no-op sync s | ratio | peak RSS MiB | µs per user |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {p['users']:,} | {p['groups']:,} | {p.get('memberships', 0):,} | {p['raw_s']:.2f} | "
            f"{p['sync_s']:.2f} | {p['ratio']:.2f} | {p['sync_rss_mib']:.0f} | {p['sync_s'] / p['users'] * 1e6:.0f} |"
            for p in pts
        ]
        note = "The same no-op `syncd sync` at each size (median of the runs); " + _linearity(pts)
        out.append(("Scaling", note, lines))
    if "plan" in results:
        p = results["plan"]
        lines = [
            "| scenario | changes | mapping s | plan s | total s | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['scenario']} | {r['changes']:,} | {r['mapping_s']:.2f} | {r['plan_s']:.2f} | {r['total_s']:.2f} | "
            f"{r['peak_rss_mib']:.0f} |"
            for r in p["rows"]
        ]
        note = (
            f"{p['users']:,} desired users against as many managed (and, vs-litellm, current) users, "
            f"{p['changed']:.0%} changed; each run in a fresh process; median of {p['repeat']} runs."
        )
        out.append(("Plan", note, lines))
    if "scim" in results:
        sc = results["scim"]
        names = list(sc["rows"])
        head = "| operation | " + " | ".join(f"{n} median ms | {n} p95 ms | {n} req/s" for n in names)
        lines = [head + " | throughput ratio |", "|---" + "|---:" * (3 * len(names) + 1) + "|"]
        for op in sc["rows"][names[0]]:
            cells = " | ".join(
                f"{sc['rows'][n][op]['median_ms']:.2f} | {sc['rows'][n][op]['p95_ms']:.2f} | "
                f"{sc['rows'][n][op]['req_s']:.0f}"
                for n in names
            )
            ratio = sc["rows"]["syncd"][op]["req_s"] / sc["rows"]["scim2-server"][op]["req_s"]
            lines.append(f"| {op} | {cells} | {ratio:.2f}x |")
        note = (
            f"{sc['users']:,} users and {sc['groups']} groups of 20 posted to each server, then {sc['samples']} "
            "samples of each request (the list: a fifth), the two servers taking turns request by request; "
            "syncd: its SCIM router on PostgreSQL (uvicorn, one process); scim2-server: in memory."
        )
        out.append(("SCIM", note, lines))
    if "push" in results:
        pu = results["push"]
        lines = ["| request | samples | p50 s | p95 s | max s |", "|---|---:|---:|---:|---:|"]
        for key, label in (
            ("create", "POST /Users + PATCH /Groups add (create in LiteLLM)"),
            ("suspend", "PATCH /Users active:false (suspend)"),
        ):
            r = pu[key]
            lines.append(f"| {label} | {r['n']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['max_s']:.2f} |")
        note = (
            "From the SCIM response to the change visible in the fake LiteLLM, through a real `syncd serve` "
            f"(PostgreSQL, default debounce 0.5 s); {pu['latency_ms']:g} ms added per LiteLLM call, which is also the "
            "polling granularity."
        )
        out.append(("SCIM push to LiteLLM", note, lines))
    del m, rep
    return out


def linear_fit(points: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Least squares of the no-op sync time on the user count: (intercept s, slope s per user, R squared)."""
    xs, ys = [p["users"] for p in points], [p["sync_s"] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return intercept, slope, 1 - residual / total if total else 1.0


def _linearity(points: list[dict[str, Any]]) -> str:
    if len(points) < 2:
        return "one size only."
    intercept, slope, r2 = linear_fit(points)
    return (
        f"least-squares line: {intercept:.2f} s + {slope * 1e6:.0f} ms per 1,000 users (R² {r2:.3f}); "
        "the intercept is mostly the interpreter start and imports."
    )


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issues 2, 3, 4 and 8 with the figure measured and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: str, met: bool) -> None:
        out.append({"name": name, "target": target, "measured": measured, "met": bool(met)})

    if "provisioning" in results:
        row = next((r for r in results["provisioning"]["rows"] if r["concurrency"] == 8), None)
        if row:
            add("provisioning speedup at concurrency 8", ">= 6x", f"{row['speedup']:.2f}x", row["speedup"] >= 6)
    if "steady" in results:
        s = results["steady"]
        add("no-op sync / raw ldap3 search", "<= 1.3x", f"{s['ratio']:.2f}x", s["ratio"] <= 1.3)
        add("no-op sync peak memory", "< 300 MiB", f"{s['sync_rss_mib']:.0f} MiB", s["sync_rss_mib"] < 300)
        add("no-op sync LiteLLM writes", "0", str(s["sync_writes"]), s["sync_writes"] == 0)
        if "targeted_s" in s:
            add(
                "incremental sync after 10 changes (d: serve's path, targeted reconcile)",
                "< 1 s",
                f"{s['targeted_s']:.2f} s",
                s["targeted_s"] < 1,
            )
        if "incremental_s" in s:
            add(
                "incremental + reconcile of everyone (c: serve before 165c914)",
                "< 1 s",
                f"{s['incremental_s']:.2f} s",
                s["incremental_s"] < 1,
            )
    if "scaling" in results:
        pts = results["scaling"]["points"]
        if len(pts) >= 3:
            _, _, r2 = linear_fit(pts)
            add(
                "no-op sync grows linearly (our criterion)", "a straight line fits: R² >= 0.95", f"{r2:.3f}", r2 >= 0.95
            )
    if "plan" in results:
        for r in results["plan"]["rows"]:
            add(f"plan 100k, 5% changed ({r['scenario']})", "< 3 s", f"{r['total_s']:.2f} s", r["total_s"] < 3)
            add(
                f"plan peak memory ({r['scenario']})",
                "< 400 MiB",
                f"{r['peak_rss_mib']:.0f} MiB",
                r["peak_rss_mib"] < 400,
            )
    if "scim" in results:
        rows = results["scim"]["rows"]
        for op in rows["syncd"]:
            ours, theirs = rows["syncd"][op]["req_s"], rows["scim2-server"][op]["req_s"]
            add(f"SCIM {op} throughput vs scim2-server", ">= 1x", f"{ours / theirs:.2f}x", ours >= theirs)
        median = rows["syncd"]["list 100"]["median_ms"]
        add("SCIM list count=100 median", "< 20 ms", f"{median:.1f} ms", median < 20)
    if "push" in results:
        p95 = results["push"]["all"]["p95_s"]
        add("SCIM push to LiteLLM p95", "< 2 s", f"{p95:.2f} s", p95 < 2)
    return out


# -- output ---------------------------------------------------------------------------------------------------------
def print_tables(results: dict[str, Any]) -> None:
    """Every section's table on stdout, then the targets."""
    m = results["machine"]
    print(f"\nmachine: {m['cores']} cores, {m['cpu_model']}, {m['memory']}, Python {m['python']}, {m['date']}")
    for title, note, lines in tables(results):
        print(f"\n## {title}\n{note}\n" + "\n".join(lines))
    print("\n## Targets")
    for t in results["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['name']}: {t['measured']} (target {t['target']})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results, quick: bench/results/quick)")
    parser.add_argument("--write-md", action="store_true", help="write BENCHMARKS.md even with --quick")
    parser.add_argument("--render", action="store_true", help="only write BENCHMARKS.md and the plot from results.json")
    parser.add_argument(
        "--keep",
        nargs="+",
        choices=SECTIONS,
        default=[],
        help="take these sections from the results.json already there",
    )
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    repeat = args.repeat or (1 if args.quick else 3)
    sections = args.only or SECTIONS
    out = args.out or (ROOT / "bench" / "results" / ("quick" if args.quick else ""))
    if args.render:
        from bench.report import plot, write_markdown

        results = json.loads((out / "results.json").read_text())
        results["targets"] = targets(results)
        write_markdown(results, ROOT / "BENCHMARKS.md", plot(results, out / "benchmarks.png"))
        print_tables(results)
        return
    results: dict[str, Any] = {"machine": machine(args.quick), "repeat": repeat, "config": cfg, "seconds": {}}
    log(f"python -m bench: {', '.join(sections)}; {repeat} run(s) each; {results['machine']['cores']} cores")
    out.mkdir(parents=True, exist_ok=True)
    earlier = out / "partial.json" if (out / "partial.json").exists() else out / "results.json"
    kept = json.loads(earlier.read_text()) if args.keep else {}
    for section in sections:
        if section in args.keep:
            results[section] = kept[section]
            results["seconds"][section] = kept.get("seconds", {}).get(section, 0.0)
            results.setdefault("kept", {})[section] = kept.get("kept", {}).get(section) or kept["machine"]["date"]
            log(f"[{section}] kept from the earlier results.json")
            continue
        log(f"[{section}]")
        started = time.perf_counter()
        if section == "provisioning":
            results[section] = run_provisioning(cfg[section], repeat)
        elif section == "steady":
            results[section] = run_steady(cfg[section], repeat)
        elif section == "scaling":
            results[section] = run_scaling(cfg[section], repeat, results.get("steady"))
        elif section == "plan":
            results[section] = run_plan(cfg[section], repeat)
        elif section == "scim":
            results[section] = run_scim(cfg[section])
        elif section == "push":
            results[section] = run_push(cfg[section])
        results["seconds"][section] = time.perf_counter() - started
        log(f"  ({results['seconds'][section]:.0f} s)")
        (out / "partial.json").write_text(
            json.dumps(results, indent=1, default=str) + "\n"
        )  # in case a later one fails
    results["targets"] = targets(results)
    print_tables(results)
    (out / "partial.json").unlink(missing_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    from bench.report import plot, write_markdown

    png = plot(results, out / "benchmarks.png")
    log(f"wrote {out / 'results.json'} and {png}")
    if not args.quick or args.write_md:
        write_markdown(results, ROOT / "BENCHMARKS.md", png)
        log(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
