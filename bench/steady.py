"""Steady state at scale: `syncd sync` end to end against a real slapd and the fake LiteLLM, all users in place.

    .venv/bin/python -m bench.steady [--users 100000] [--groups 2000] [--repeat 3]

The directory is bench/ldap_pull.py's (`write_ldif`: some groups over 10,000 members, some nested) plus one
`all-staff` group naming every user, so that every person is mapped and managed. Per scale:

1. generate and `slapadd -q` the directory, start slapd, start the fake LiteLLM in its own process;
2. **seed** (the documented shortcut): one full pull recorded into the store, then the store's managed-user records
   and the fake's users are written straight from the desired state, i.e. exactly what `apply` would have written
   after creating everyone (`desired_fields`), and the drift check is marked done. Creating 100,000 users over HTTP
   would take the provisioning benchmark's time again and measure nothing new;
3. each repeat, side by side: (a) a raw ldap3 paged search of the same entries (`measure_raw` of ldap_pull.py, its
   own process), (b) `python -m syncd sync --config FILE --json` as a real subprocess: wall time, peak RSS of that
   process (wait4), the fake's write and read calls during it, and (`--incremental`) scheduled pulls as `syncd
   serve` makes them, in one process: a full pull and reconcile, then 10 changes in the directory (5 members added
   to a mapped group, 5 mail changes) and (c) an incremental pull followed by a reconcile of everyone (serve before
   165c914), then 10 more changes and (d) an incremental pull followed by a reconcile of only the users it changed
   (serve since 165c914): wall time and writes of each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "ldap")]

from _slapd import ADMIN_DN, ADMIN_PASSWORD, SYNC_DN, SYNC_PASSWORD, Slapd  # noqa: E402

from bench import ldap_pull  # noqa: E402
from bench.ldap_pull import BIG_GROUPS, GROUPS, NESTED_PARENTS, PEOPLE, _child, _stamp, write_ldif  # noqa: E402

MASTER = "sk-bench-steady"
ALL_STAFF = "all-staff"
#: groups whose members get models of their own (besides the big ones)
MAPPED_EVERY = 20


def write_directory(path: Path, users: int, groups: int) -> None:
    """ldap_pull's directory plus an `all-staff` group that names every user.

    ldap_pull.py sizes its five big groups absolutely (10,000 + 1,000 g members, capped at the user count); here they
    are sized in proportion (10% + 1% g of the users), so that a smaller directory is the same shape scaled down and
    the scaling section compares like with like. At 100,000 users the two are the same directory, entry for entry
    (the proportional group is a prefix of the same random sample, drawn from the same random state).
    """
    original = ldap_pull._members

    def members(rng: random.Random, g: int, users: int, groups: int) -> list[str]:
        chosen = original(rng, g, users, groups)
        if g < BIG_GROUPS:  # only users, no nested groups, in the big groups
            chosen = chosen[: round(users * (10_000 + 1_000 * g) / 100_000)]
        return chosen

    ldap_pull._members = members
    try:
        write_ldif(path, users, groups)
    finally:
        ldap_pull._members = original
    with path.open("a") as out:
        out.write(f"dn: cn={ALL_STAFF},{GROUPS}\nobjectClass: groupOfNames\ncn: {ALL_STAFF}\n{_stamp(0)}")
        for i in range(users):
            out.write(f"member: uid=u{i:06d},{PEOPLE}\n")
        out.write("\n")


def mappings(groups: int) -> list[dict[str, Any]]:
    """Everyone an internal user; the big groups give budgets and limits; every 20th group a model of its own."""
    out: list[dict[str, Any]] = [{"group": ALL_STAFF, "role": "internal_user", "models": ["gpt-4o-mini"]}]
    for g in range(BIG_GROUPS):
        out.append(
            {
                "group": f"g{g:05d}",
                "models": [f"big-model-{g}"],
                "max_budget": 100.0 * (g + 1),
                "budget_duration": "monthly",
                "tpm_limit": 10_000 * (g + 1),
            }
        )
    for g in range(BIG_GROUPS, groups, MAPPED_EVERY):  # g00045 among them (see _change_directory)
        out.append({"group": f"g{g:05d}", "models": [f"model-{g}"], "rpm_limit": 100 + g})
    return out


def write_config(path: Path, database: str, ldap_url: str, litellm_url: str, groups: int) -> None:
    """The YAML config `syncd sync` runs with."""
    config = {
        "database": {"url": database},
        "litellm": {"url": litellm_url, "master_key": MASTER, "concurrency": 8},
        "ldap": [
            {
                "name": "corp",
                "url": ldap_url,
                "bind_dn": SYNC_DN,
                "bind_password": SYNC_PASSWORD,
                "page_size": 500,
                "users": {"base_dn": PEOPLE},
                "groups": {"base_dn": GROUPS, "nested": True},
            }
        ],
        "mappings": mappings(groups),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# -- children -------------------------------------------------------------------------------------------------------
def seed(config: Path, out: Path) -> dict[str, Any]:
    """Pull once and record; write the managed records and the fake's users from the desired state (no HTTP)."""
    from syncd.model import ManagedUser
    from syncd.plan import desired_fields
    from syncd.pull import pull_sources
    from syncd.reconcile import DRIFT_STATE, Reconciler
    from syncd.settings import load_settings
    from syncd.store import make_engine, upgrade
    from syncd.store.repository import SyncStore

    settings = load_settings(str(config))
    engine = make_engine(settings.database.url)
    upgrade(engine)
    store = SyncStore(engine)
    started = time.perf_counter()
    _, failed = pull_sources(settings, store, record=True)
    assert not failed, failed
    identities, groups = store.load_people()
    memberships = sum(len(group.members) for group in groups)
    del identities, groups
    desired = Reconciler(settings, store, None).desired()
    records = [
        ManagedUser(uid, u.source, u.external_id, "active", desired_fields(u)) for uid, u in desired.users.items()
    ]
    users = list(desired.users)
    for start in range(0, len(records), 5_000):
        with engine.begin() as conn:
            store._save_many(conn, records[start : start + 5_000])
    store.mark_success(DRIFT_STATE)
    with out.open("w") as file:
        for record in records:
            file.write(json.dumps({"user_id": record.user_id, **record.applied}) + "\n")
    engine.dispose()
    return {"managed": len(users), "memberships": memberships, "seconds": time.perf_counter() - started}


def serve_fake(port: int, users_file: Path | None) -> None:
    """The fake LiteLLM seeded from `users_file`, plus GET /_bench/calls (counts of the calls answered so far)."""
    import uvicorn

    from syncd.testing.fake_litellm import create_fake_litellm

    app = create_fake_litellm(MASTER)
    fake = app.state.fake
    if users_file is not None:
        with users_file.open() as file:
            for line in file:
                fields = json.loads(line)
                fake.add_user(fields.pop("user_id"), **fields)

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/calls":
            counts = Counter(f"{c.method} {c.path}" for c in fake.calls)
            body = json.dumps({"writes": fake.write_calls(), "calls": counts, "users": len(fake.users)}).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    uvicorn.run(wrapper, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def incremental(config: Path, ldap_url: str, litellm_url: str, run: int) -> dict[str, Any]:
    """serve's scheduled-pull path in one process: full pull + reconcile, 10 directory changes, incremental."""

    from syncd.litellm import LiteLLMClient
    from syncd.pull import pull_sources
    from syncd.reconcile import ReconcileOptions, Reconciler
    from syncd.settings import load_settings
    from syncd.store import make_engine
    from syncd.store.repository import SyncStore

    settings = load_settings(str(config))
    store = SyncStore(make_engine(settings.database.url))
    cache: dict[str, Any] = {}
    with LiteLLMClient(litellm_url, MASTER) as client:
        reconciler = Reconciler(settings, store, client)
        started = time.perf_counter()
        _, failed = pull_sources(settings, store, record=True, sources=cache)
        full = reconciler.run(ReconcileOptions(trigger="bench"))
        full_seconds = time.perf_counter() - started
        assert not failed and full.status == "success", (failed, full.status, full.problems)
        users = sum(1 for _ in open(config.with_name("fake-users.jsonl")))  # noqa: SIM115
        changed = _change_directory(ldap_url, users, run)
        time.sleep(1.1)  # modifyTimestamp has a one-second resolution
        before = _calls(litellm_url)
        started = time.perf_counter()
        snapshots, failed = pull_sources(settings, store, record=True, incremental=True, sources=cache)
        pulled = time.perf_counter()
        report = reconciler.run(ReconcileOptions(trigger="bench"))
        done = time.perf_counter()
        after = _calls(litellm_url)
        targeted = _targeted(settings, store, cache, reconciler, ldap_url, litellm_url, users, run)
    assert not failed and snapshots and snapshots[0].incremental, (failed, [s.incremental for s in snapshots])
    assert report.status == "success", (report.status, report.problems)
    return {
        "full_seconds": full_seconds,
        "seconds": done - started,
        "pull_seconds": pulled - started,
        "reconcile_seconds": done - pulled,
        "changes_made": changed,
        "planned": len(report.plan.changes),
        "planned_fields": dict(Counter(d.field for c in report.plan.changes for d in c.diffs)),
        "writes": after["writes"] - before["writes"],
        "groups_resent": len(snapshots[0].groups),
        "identities_resent": len(snapshots[0].identities),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **targeted,
    }


def _targeted(
    settings: Any,
    store: Any,
    cache: dict[str, Any],
    reconciler: Any,
    ldap_url: str,
    litellm_url: str,
    users: int,
    run: int,
) -> dict[str, Any]:
    """(d) serve's path since 165c914: 10 more changes, the incremental pull recorded, then a reconcile of only the
    users the record affected (no run when none).
    """
    from syncd.pull import pull_sources
    from syncd.reconcile import ReconcileOptions

    _change_directory(ldap_url, users, run + 1_000)
    time.sleep(1.1)
    before = _calls(litellm_url)
    affected: set[str] = set()
    started = time.perf_counter()
    snapshots, failed = pull_sources(settings, store, record=True, incremental=True, sources=cache, affected=affected)
    pulled = time.perf_counter()
    assert not failed and snapshots and snapshots[0].incremental, failed
    if affected:
        report = reconciler.run(ReconcileOptions(trigger="schedule", user_ids=tuple(sorted(affected))))
        assert report.status == "success", (report.status, report.problems)
    done = time.perf_counter()
    return {
        "targeted_seconds": done - started,
        "targeted_pull_seconds": pulled - started,
        "targeted_reconcile_seconds": done - pulled,
        "targeted_users": len(affected),
        "targeted_writes": _calls(litellm_url)["writes"] - before["writes"],
    }


def _change_directory(url: str, users: int, run: int) -> int:
    """5 people added to a mapped group (they gain its model) and 5 mail changes: 10 changes."""
    import ldap3

    rng = random.Random(1000 + run)
    admin = ldap3.Connection(ldap3.Server(url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    group = f"cn=g{BIG_GROUPS + NESTED_PARENTS:05d},{GROUPS}"  # mapped, and no nested parent of a big group
    added = 0
    while added < 5:
        member = f"uid=u{rng.randrange(users):06d},{PEOPLE}"
        admin.modify(group, {"member": [(ldap3.MODIFY_ADD, [member])]})
        added += admin.result["result"] == 0  # 20: already a member
    for _ in range(5):
        i = rng.randrange(users)
        mail = f"u{i:06d}.r{run}.{rng.randrange(10**6)}@example.org"
        admin.modify(f"uid=u{i:06d},{PEOPLE}", {"mail": [(ldap3.MODIFY_REPLACE, [mail])]})
        assert admin.result["result"] == 0, admin.result
    admin.unbind()
    return 10


def _calls(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_bench/calls", timeout=60).json())


# -- the parent -----------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.steady", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"bench.steady {args[0]} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@contextmanager
def _fake(users_file: Path | None) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "bench.steady", "--serve-fake", str(port)]
    command += [str(users_file)] if users_file else []
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                _calls(url)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the fake LiteLLM did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def syncd_sync(config: Path, litellm_url: str) -> dict[str, Any]:
    """`syncd sync` as a subprocess: wall time, peak RSS (wait4), status, plan summary, LiteLLM calls made."""
    before = _calls(litellm_url)
    command = [sys.executable, "-m", "syncd", "sync", "--config", str(config), "--json", "--log-level", "WARNING"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"syncd sync exited {process.returncode}:\n{stderr[-4000:]}")
    report = json.loads(stdout)
    after = _calls(litellm_url)
    calls = Counter(after["calls"]) - Counter(before["calls"])
    return {
        "seconds": seconds,
        "rss_mib": usage.ru_maxrss / 1024,
        "status": report["status"],
        "changes": len(report["plan"]["changes"]),
        "writes": after["writes"] - before["writes"],
        "reads": sum(n for call, n in calls.items() if call.startswith("GET /user/")),
    }


def measure_scale(users: int, groups: int, repeat: int, *, with_incremental: bool, log: Any = print) -> dict[str, Any]:
    """Build the world at one scale and measure (a), (b) and optionally (c) `repeat` times side by side."""
    with tempfile.TemporaryDirectory(prefix=f"syncd-bench-steady-{users}-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        server = Slapd.create(root / "slapd")
        write_directory(root / "directory.ldif", users, groups)
        server.load(root / "directory.ldif")
        server.start()
        try:
            config = root / "syncd.yaml"
            users_file = root / "fake-users.jsonl"
            write_config(config, f"sqlite:///{root}/syncd.db", server.url, "http://127.0.0.1:1", groups)
            seeded = _run_child("--seed", str(config), str(users_file))
            log(
                f"  {users:,} users: directory loaded and store seeded in {time.perf_counter() - started:.0f} s "
                f"({seeded['managed']:,} managed users, {seeded['memberships']:,} memberships)"
            )
            with _fake(users_file) as litellm_url:
                write_config(config, f"sqlite:///{root}/syncd.db", server.url, litellm_url, groups)
                runs: list[dict[str, Any]] = []
                for run in range(repeat):
                    raw = _child("raw", server.url)
                    sync = syncd_sync(config, litellm_url)
                    row: dict[str, Any] = {"raw": raw, "sync": sync}
                    if with_incremental:
                        row["incremental"] = _run_child("--incremental", str(config), server.url, litellm_url, str(run))
                    runs.append(row)
                    log(
                        f"  run {run + 1}: raw {raw['seconds']:.2f} s, sync {sync['seconds']:.2f} s "
                        f"({sync['rss_mib']:.0f} MiB, {sync['writes']} writes, {sync['changes']} changes)"
                        + (
                            f", incremental {row['incremental']['seconds']:.2f} s "
                            f"({row['incremental']['writes']} writes), targeted "
                            f"{row['incremental']['targeted_seconds']:.2f} s"
                            if with_incremental
                            else ""
                        )
                    )
        finally:
            server.stop()
    return {
        "users": users,
        "groups": groups,
        "managed": seeded["managed"],
        "memberships": seeded["memberships"],
        "runs": runs,
        **summarise(runs),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs (peak memory: the largest seen) and the ratio sync / raw of the medians."""

    def med(part: str, key: str) -> float:
        return float(statistics.median(r[part][key] for r in runs))

    out: dict[str, Any] = {
        "raw_s": med("raw", "seconds"),
        "raw_rss_mib": max(r["raw"]["rss_mib"] for r in runs),
        "sync_s": med("sync", "seconds"),
        "sync_rss_mib": max(r["sync"]["rss_mib"] for r in runs),
        "sync_writes": max(r["sync"]["writes"] for r in runs),
        "sync_reads": max(r["sync"]["reads"] for r in runs),
        "sync_changes": max(r["sync"]["changes"] for r in runs),
        # the ratio of each run (measured side by side), then its median
        "ratio": float(statistics.median(r["sync"]["seconds"] / r["raw"]["seconds"] for r in runs)),
    }
    if "incremental" in runs[0]:
        out |= {
            "incremental_s": med("incremental", "seconds"),
            "incremental_pull_s": med("incremental", "pull_seconds"),
            "incremental_reconcile_s": med("incremental", "reconcile_seconds"),
            "incremental_writes": statistics.median(r["incremental"]["writes"] for r in runs),
            "incremental_rss_mib": max(r["incremental"]["rss_mib"] for r in runs),
            "targeted_s": med("incremental", "targeted_seconds"),
            "targeted_pull_s": med("incremental", "targeted_pull_seconds"),
            "targeted_reconcile_s": med("incremental", "targeted_reconcile_seconds"),
            "targeted_users": statistics.median(r["incremental"]["targeted_users"] for r in runs),
            "targeted_writes": statistics.median(r["incremental"]["targeted_writes"] for r in runs),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-fake", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--incremental", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        print(json.dumps(seed(*args.seed)))
    elif args.serve_fake:
        serve_fake(int(args.serve_fake[0]), Path(args.serve_fake[1]) if len(args.serve_fake) > 1 else None)
    elif args.incremental:
        config, ldap_url, litellm_url, run = args.incremental
        print(json.dumps(incremental(Path(config), ldap_url, litellm_url, int(run))))
    else:
        result = measure_scale(args.users, args.groups, args.repeat, with_incremental=True)
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
