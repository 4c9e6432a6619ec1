"""BENCHMARKS.md and the PNG plot, from the results of `python -m bench`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: hand-written sections kept in the page: the fixes made from profiles (before/after figures measured at the time)
#: first, then every other `bench/results/*.md` (figures measured outside `python -m bench`, e.g. the container image)
NOTES = ROOT / "bench" / "results"


def plot(results: dict[str, Any], path: Path) -> Path:
    """A 2x2 figure: scaling of the no-op sync, its memory, provisioning throughput, SCIM medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    m = results["machine"]
    fig.suptitle(
        f"syncd benchmarks: {m['cores']} cores, {m['cpu_model']}, {m['date']}" + (" (quick)" if m["quick"] else ""),
        fontsize=12,
    )
    _scaling(axes[0][0], axes[0][1], results)
    _provisioning(axes[1][0], results)
    _scim(axes[1][1], results)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scaling(ax: Any, ax_mem: Any, results: dict[str, Any]) -> None:
    points = (results.get("scaling") or {}).get("points") or ([results["steady"]] if "steady" in results else [])
    if not points:
        ax.set_visible(False)
        ax_mem.set_visible(False)
        return
    users = [p["users"] / 1000 for p in points]
    ax.plot(users, [p["sync_s"] for p in points], "o-", color="tab:blue", label="syncd sync, no-op (end to end)")
    ax.plot(users, [p["raw_s"] for p in points], "s--", color="tab:gray", label="raw ldap3 paged search")
    ax.plot(users, [1.3 * p["raw_s"] for p in points], ":", color="tab:red", label="target: 1.3 x raw")
    for x, p in zip(users, points, strict=True):
        ax.annotate(f"{p['sync_s']:.1f} s", (x, p["sync_s"]), textcoords="offset points", xytext=(-10, 8), fontsize=8)
    if len(points) >= 2:
        from bench.__main__ import linear_fit

        intercept, slope, r2 = linear_fit(points)
        xs = [0.0, max(users)]
        ax.plot(
            xs,
            [intercept + slope * x * 1000 for x in xs],
            "-",
            color="tab:blue",
            alpha=0.25,
            label=f"least-squares line (R² {r2:.3f})",
        )
    ax.set_xlabel("users (thousands)")
    ax.set_ylabel("wall time (s)")
    ax.set_title("No-op sync against the raw LDAP search")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0, top=max(p["sync_s"] for p in points) * 1.2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")

    ax_mem.plot(users, [p["sync_rss_mib"] for p in points], "o-", color="tab:blue", label="syncd sync peak RSS")
    ax_mem.plot(users, [p["raw_rss_mib"] for p in points], "s--", color="tab:gray", label="raw search peak RSS")
    ax_mem.axhline(300, linestyle=":", color="tab:red", label="target: 300 MiB")
    for x, p in zip(users, points, strict=True):
        ax_mem.annotate(
            f"{p['sync_rss_mib']:.0f}", (x, p["sync_rss_mib"]), textcoords="offset points", xytext=(-8, 8), fontsize=8
        )
    ax_mem.set_xlabel("users (thousands)")
    ax_mem.set_ylabel("peak RSS (MiB)")
    ax_mem.set_title("Peak memory of the no-op sync")
    ax_mem.set_xlim(left=0)
    ax_mem.set_ylim(bottom=0, top=max(350, max(p["sync_rss_mib"] for p in points) * 1.15))
    ax_mem.grid(alpha=0.3)
    ax_mem.legend(fontsize=8, loc="upper left")


def _provisioning(ax: Any, results: dict[str, Any]) -> None:
    p = results.get("provisioning")
    if not p:
        ax.set_visible(False)
        return
    rows = p["rows"]
    labels = [str(r["concurrency"]) for r in rows]
    bars = ax.bar(labels, [r["users_per_s"] for r in rows], color="tab:green")
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(
            f"{r['users_per_s']:.0f}/s\n{r['speedup']:.1f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xlabel("concurrency")
    ax.set_ylabel("users created per second")
    ax.set_title(f"Initial provisioning of {p['users']:,} users, {p['latency_ms']:g} ms per LiteLLM call")
    ax.set_ylim(top=max(r["users_per_s"] for r in rows) * 1.25)
    ax.grid(alpha=0.3, axis="y")


def _scim(ax: Any, results: dict[str, Any]) -> None:
    s = results.get("scim")
    if not s:
        ax.set_visible(False)
        return
    rows = s["rows"]
    names = list(rows)
    ops = list(rows[names[0]])
    width = 0.8 / len(names)
    colors = ["tab:blue", "tab:gray"]
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(ops))]
        values = [rows[name][op]["median_ms"] for op in ops]
        bars = ax.bar(xs, values, width, label=name, color=colors[i % 2])
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                f"{value:.1f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(range(len(ops)), ops)
    ax.set_ylabel("median latency (ms), sequential client")
    ax.set_title(f"SCIM, {s['users']:,} users: syncd (PostgreSQL), scim2-server (memory)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def write_markdown(results: dict[str, Any], path: Path, png: Path) -> None:
    """BENCHMARKS.md: machine, targets, every table, method notes, fixes."""
    from bench.__main__ import tables

    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (`make bench`); every figure below was measured by it, each reference beside",
        "syncd in the same run of its section. Raw figures: "
        f"[{_rel(path, png.parent / 'results.json')}]({_rel(path, png.parent / 'results.json')}).",
        "",
        f"**Machine**: {m['cores']} cores ({m['cpu_model']}), {m['memory']} RAM, Python {m['python']}, shared and "
        f"noisy (absolute figures move between runs; the ratios measured side by side are what count). "
        f"**Date**: {m['date']}. **Runs per figure**: {results['repeat']} (medians)"
        + (" — **quick variant: smaller sizes, not comparable to the targets**" if m["quick"] else "")
        + ".",
        *_kept(results),
        "",
        f"![benchmarks]({_rel(path, png)})",
        "",
        "## Targets",
        "",
        "| target | wanted | measured | |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {t['name']} | {t['target']} | {t['measured']} | {'met' if t['met'] else '**missed**'} |"
        for t in results["targets"]
    ]
    for title, note, table in tables(results):
        lines += ["", f"## {title}", "", note, "", *table]
    lines += ["", "## How each figure is measured", "", *_method(results)]
    for note in _notes():
        lines += ["", note.read_text().strip()]
    seconds = results.get("seconds") or {}
    if seconds:
        lines += ["", "Section run times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()) + "."]
    path.write_text("\n".join(lines) + "\n")


def _notes() -> list[Path]:
    """The hand-written sections, fixes.md first."""
    return sorted(NOTES.glob("*.md"), key=lambda p: (p.name != "fixes.md", p.name))


def _kept(results: dict[str, Any]) -> list[str]:
    kept = results.get("kept") or {}
    if not kept:
        return []
    by_date: dict[str, list[str]] = {}
    for section, date in kept.items():
        by_date.setdefault(date, []).append(section)
    runs = "; ".join(f"{', '.join(sections)} from the run of {date}" for date, sections in by_date.items())
    return ["", f"Sections measured in an earlier run of `python -m bench` on this machine (`--keep`): {runs}."]


def _rel(base: Path, target: Path) -> str:
    return os.path.relpath(target, base.parent)


def _method(results: dict[str, Any]) -> list[str]:
    del results
    return METHOD.strip().splitlines()


METHOD = """
- **Initial provisioning** (`bench/provisioning.py`): a fresh SQLite store holding N identities in one mapped group,
  an empty fake LiteLLM in its own process (`--latency-s`), one `Reconciler.run()`; users/s = N / wall time of the
  run; each repeat runs concurrency 1, 8 and 32 in turn and the speedup is taken within it.
- **Steady state** (`bench/steady.py`): bench/ldap_pull.py's generated directory (some groups over 10,000 members,
  some nested) plus an `all-staff` group naming everyone, bulk-loaded with `slapadd -q` into a real slapd.
  **Shortcut, stated plainly**: to have everyone already in place without creating 100,000 users over HTTP, one full
  pull is recorded into the store, then the store's managed-user records and the fake's users are written directly
  from the desired state (`desired_fields`: exactly what apply would have written after creating them), and the
  drift check is marked done. (a) is `measure_raw` of ldap_pull.py in its own process: ldap3 defaults, paged search
  as a generator over the same users and groups. (b) is `python -m syncd sync --config FILE --json` as a subprocess
  (interpreter start, LDAP pull, record into SQLite, plan, apply of nothing); wall time from the parent, peak RSS
  from `wait4`, LiteLLM calls counted by the fake. (c) and (d) are scheduled pulls as `syncd serve` makes them, in
  one process (an incremental needs the `LdapSource` index of an earlier pull in the same process, as serve keeps
  it): a full pull and reconcile, then 10 changes made in slapd (5 people added to a mapped group, 5 mail changes),
  then (c) the incremental pull and record followed by a reconcile of everyone (serve before 165c914), then 10 more
  changes and (d) the incremental pull and record followed by a reconcile of only the users it changed (serve since
  165c914); peak RSS is the whole process's, full pull included.
- **Scaling**: the same (a) and (b) at smaller directories (groups: users / 50; the five big groups sized in
  proportion to the users, 10% + 1% each, which at 100,000 users is exactly ldap_pull.py's directory).
- **Plan** (`bench/plan_bench.py`): mapping and plan of 100,000 users against managed records (vs-store), and
  against LiteLLM's state as well (vs-litellm), in a fresh process per run; peak RSS includes building the inputs.
- **SCIM** (`bench/scim_bench.py`): syncd's SCIM router (uvicorn, PostgreSQL in a throwaway database) and
  `scim2-server` (in memory), loaded with the same data; a sequential httpx client on loopback.
- **Push to LiteLLM** (`bench/push_latency.py`): a real `syncd serve` process (PostgreSQL, SCIM, reconcile worker),
  the fake LiteLLM in its own process; time from the SCIM response to the change in the fake.
"""
