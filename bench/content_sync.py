"""Content sync (RFC 4533) at scale, side by side with the C client and a plain ldap3 search, in one run.

    .venv/bin/python -m bench.content_sync [--users 100000] [--groups 2000]

The directory is bench/ldap_pull.py's, on the test slapd (syncprov with a session log). Figures:
(a) `ldapsearch` (C, ldap-utils) reading the users and groups, paged, output discarded;
(b) a plain ldap3 paged search of the same entries (ldap_pull's `measure_raw`, its own process);
(c) the store seeded first by a full pull recorded in a process of its own (c0: it starts the content sync, cookies
then every entry read paged, and stores the index with the cookies); then in a new process, as `syncd sync` or a
restarted `syncd serve`: its first pull, which continues the content sync from the index stored (c1, nothing to
change); a no-op pull through content sync, recorded (c2); then 10 changes in the directory (4 users deleted, 3
mail changes, 2 members added, 1 group deleted) and a content-synced pull, recorded (c3: the first changes this
process sees, so the groups they touch are expanded whole once); 10 more changes of the same kind, recorded (c3b:
those groups are now updated by difference, as in a `serve` that has run a while); last, the daily true full pull
(every entry read, the content sync started afresh, c4). Pull and record times apart, and the peak RSS of each
process.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "ldap")]

from _slapd import ADMIN_DN, ADMIN_PASSWORD, SYNC_DN, SYNC_PASSWORD, Slapd  # noqa: E402

from bench.ldap_pull import (  # noqa: E402
    GROUP_ATTRIBUTES,
    GROUPS,
    PEOPLE,
    USER_ATTRIBUTES,
    measure_raw,
    write_ldif,
)


def measure_ldapsearch(url: str) -> float:
    """(a) seconds for ldapsearch to read the users and the groups, paged by 500, into /dev/null."""
    started = time.perf_counter()
    for base, flt, attrs in (
        (PEOPLE, "(objectClass=inetOrgPerson)", USER_ATTRIBUTES),
        (GROUPS, "(objectClass=groupOfNames)", GROUP_ATTRIBUTES),
    ):
        command = ["ldapsearch", "-x", "-LLL", "-H", url, "-D", SYNC_DN, "-w", SYNC_PASSWORD, "-b", base]
        command += ["-E", "pr=500/noprompt", flt, *attrs]
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def measure_content(url: str, folder: str, users: int, groups: int, *, seed: bool = False) -> dict[str, Any]:
    """(c) first pull, no-op content sync, 10 changes then a content sync: each pulled and recorded (`seed`: only
    the first pull, into a new store)."""
    import ldap3

    from syncd.settings.ldap import LdapSourceSettings
    from syncd.sources.ldap import LdapSource
    from syncd.store import make_engine
    from syncd.store.repository import SyncStore
    from syncd.store.tables import metadata

    settings = LdapSourceSettings.model_validate(
        {
            "name": "bench",
            "url": url,
            "bind_dn": SYNC_DN,
            "bind_password": SYNC_PASSWORD,
            "page_size": 500,
            "content_sync": "on",
            "users": {"base_dn": PEOPLE},
            "groups": {"base_dn": GROUPS, "nested": True},
        }
    )
    engine = make_engine(f"sqlite:///{folder}/content.db")
    metadata.create_all(engine)
    store, source = SyncStore(engine), LdapSource(settings)

    def timed(*, true_full: bool = False) -> tuple[float, Any]:
        started = time.perf_counter()
        source.expect_recorded(store.source_state("bench").sync_cookie, lambda: store.sync_index("bench"))
        snapshot = source.pull(true_full=true_full)
        assert snapshot.complete, snapshot.problems
        pulled = time.perf_counter()
        result = store.record_snapshot(snapshot)
        return time.perf_counter() - started, (snapshot, result, pulled - started)

    first, (snapshot, _, _) = timed()
    if seed:
        assert not snapshot.change_based
        return {
            "first_s": first,
            "identities": len(snapshot.identities),
            "groups": len(snapshot.groups),
            "index_mib": len(snapshot.sync_index or b"") / 2**20,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    assert snapshot.change_based and snapshot.counters.get("content_sync_resumed") == 1, snapshot.counters
    del snapshot
    noop, (snapshot, result, noop_pull) = timed()
    assert snapshot.change_based and not result.changed, "the no-op pull changed something"
    admin = ldap3.Connection(ldap3.Server(url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    _ten_changes(admin, users, groups, 0)
    changed, (snapshot, result, changed_pull) = timed()
    assert snapshot.change_based and result.changed
    changed_identities, changed_groups = len(snapshot.identities), len(snapshot.groups)
    removed = len(snapshot.removed_identities) + len(snapshot.removed_groups)
    del snapshot
    _ten_changes(admin, users, groups, 1)
    steady, (snapshot, result, steady_pull) = timed()
    assert snapshot.change_based and result.changed and snapshot.counters.get("groups_by_difference")
    del snapshot
    verify, (snapshot, result, _) = timed(true_full=True)
    assert not snapshot.change_based and not result.changed, "the true full pull found drift"
    del snapshot
    return {
        "first_s": first,
        "verify_s": verify,
        "noop_s": noop,
        "noop_pull_s": noop_pull,
        "changed_s": changed,
        "changed_pull_s": changed_pull,
        "steady_s": steady,
        "steady_pull_s": steady_pull,
        "changed_identities": changed_identities,
        "changed_groups": changed_groups,
        "removed": removed,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _ten_changes(admin: Any, users: int, groups: int, batch: int) -> None:
    """4 users deleted, 3 mail changes, 2 members added, 1 group deleted; `batch` makes each batch other entries."""
    import ldap3

    low = users - 1 - 4 * batch
    for i in range(4):
        assert admin.delete(f"uid=u{low - i:06d},{PEOPLE}"), admin.result
    for i in range(3):
        admin.modify(
            f"uid=u{users // 2 + 3 * batch + i:06d},{PEOPLE}",
            {"mail": [(ldap3.MODIFY_REPLACE, [f"moved{batch}{i}@example.org"])]},
        )
        assert admin.result["result"] == 0, admin.result
    for i in range(2):
        group, member = f"cn=g{groups - 10:05d},{GROUPS}", f"uid=u{users // 3 + 2 * batch + i:06d},{PEOPLE}"
        admin.modify(group, {"member": [(ldap3.MODIFY_ADD, [member])]})
        assert admin.result["result"] in (0, 20), admin.result
    assert admin.delete(f"cn=g{groups - 1 - batch:05d},{GROUPS}"), admin.result


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {args[1]} run failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Generate, load, serve, measure, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=2_000)
    parser.add_argument("--measure", choices=["raw", "content", "seed"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure == "raw":
        print(json.dumps(measure_raw(args.url)))
        return
    if args.measure in ("content", "seed"):
        print(json.dumps(measure_content(args.url, args.folder, args.users, args.groups, seed=args.measure == "seed")))
        return
    root = Path(tempfile.mkdtemp(prefix="syncd-bench-content-"))
    try:
        server = Slapd.create(root / "slapd")
        write_ldif(root / "directory.ldif", args.users, args.groups)
        server.load(root / "directory.ldif")
        server.start()
        try:
            ldapsearch = min(measure_ldapsearch(server.url) for _ in range(3))
            raw = _child("--measure", "raw", "--url", server.url)
            sizes = ["--users", str(args.users), "--groups", str(args.groups), "--url", server.url]
            seed = _child("--measure", "seed", "--folder", str(root), *sizes)
            content = _child("--measure", "content", "--folder", str(root), *sizes)
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print_table(args.users, args.groups, ldapsearch, raw, content, seed)


def _print_table(
    users: int, groups: int, ldapsearch: float, raw: dict[str, Any], content: dict[str, Any], seed: dict[str, Any]
) -> None:
    print(f"\n{users:,} users, {groups:,} groups; {seed['identities']:,} identities, {seed['groups']:,} groups\n")
    print(f"| {'run':<58} | {'wall s':>7} | {'vs ldapsearch':>13} |")
    print(f"|{'-' * 60}|{'-' * 9}|{'-' * 15}|")
    rows = [
        ("(a) ldapsearch (C), paged, users and groups", ldapsearch),
        ("(b) plain ldap3 paged search, streamed", raw["seconds"]),
        ("(c0) seed: full pull into an empty store, index stored; recorded", seed["first_s"]),
        ("(c1) first pull of a new process: continued from the store", content["first_s"]),
        ("(c2) no-op pull through content sync, recorded", content["noop_s"]),
        ("     of which the pull", content["noop_pull_s"]),
        (
            f"(c3) 10 changes ({content['removed']} removals; {content['changed_identities']} users, "
            f"{content['changed_groups']} groups sent), recorded",
            content["changed_s"],
        ),
        ("     of which the pull", content["changed_pull_s"]),
        ("(c3b) 10 more changes, recorded", content["steady_s"]),
        ("     of which the pull", content["steady_pull_s"]),
        ("(c4) true full pull (every entry, content sync afresh)", content["verify_s"]),
    ]
    for label, seconds in rows:
        print(f"| {label:<58} | {seconds:7.3f} | {seconds / ldapsearch:12.2f}x |")
    print(
        f"\npeak RSS of (c1)-(c4): {content['rss_mib']:.0f} MiB; of (c0): {seed['rss_mib']:.0f} MiB; "
        f"of (b): {raw['rss_mib']:.0f} MiB; index stored: {seed['index_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    main()
