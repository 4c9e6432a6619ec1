"""Benchmark: pulling 100,000 users and 2,000 groups from a real slapd, plain ldap3 against syncd's LdapSource.

    .venv/bin/python bench/ldap_pull.py [--users 100000] [--groups 2000] [--keep DIR]

Generates the directory as LDIF (some groups over 10,000 members, some nested, every entry last changed a day ago),
loads it with `slapadd -q` into a fresh slapd, then measures, each in a fresh interpreter so peak RSS is its own:
(a) a plain ldap3 paged search (generator, streamed) of the same users and groups and attributes, and (b)
`LdapSource.pull()` (full), followed in the same process by one membership change and an incremental pull.
Prints a table: wall time, peak RSS, and the ratio b/a.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "ldap")]

from _slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd  # noqa: E402

PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
#: entries were last changed one per second from this time on (a directory's history, not one bulk load)
HISTORY_START = datetime(2026, 1, 1, tzinfo=UTC)
USER_ATTRIBUTES = ["entryUUID", "uid", "mail", "cn", "modifyTimestamp"]
GROUP_ATTRIBUTES = ["entryUUID", "cn", "member", "modifyTimestamp"]
BIG_GROUPS = 5
NESTED_PARENTS = 40


def write_ldif(path: Path, users: int, groups: int, seed: int = 7) -> None:
    """The directory: ou=people with `users` inetOrgPersons, ou=groups with `groups` groupOfNames."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for ou in ("people", "groups"):
            out.write(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n{_stamp(0)}\n")
        for i in range(users):
            stamp = _stamp(rng.randrange(users + groups))
            out.write(
                f"dn: uid=u{i:06d},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: u{i:06d}\ncn: User Number {i}\n"
                f"sn: Number {i}\nmail: u{i:06d}@example.org\ntitle: engineer\n{stamp}\n"
            )
        for g in range(groups):
            stamp = _stamp(rng.randrange(users + groups))
            out.write(f"dn: cn=g{g:05d},{GROUPS}\nobjectClass: groupOfNames\ncn: g{g:05d}\n{stamp}")
            for member in _members(rng, g, users, groups):
                out.write(f"member: {member}\n")
            out.write("\n")


def _stamp(second: int) -> str:
    value = (HISTORY_START + timedelta(seconds=second)).strftime("%Y%m%d%H%M%SZ")
    return f"createTimestamp: {value}\nmodifyTimestamp: {value}\n"


def _members(rng: random.Random, g: int, users: int, groups: int) -> list[str]:
    count = 10_000 + 1_000 * g if g < BIG_GROUPS else rng.randint(5, 100)  # some over 10,000 members
    chosen = rng.sample(range(users), min(count, users))
    members = [f"uid=u{i:06d},{PEOPLE}" for i in chosen]
    if BIG_GROUPS <= g < BIG_GROUPS + NESTED_PARENTS:  # parents of a few other groups, some of them big
        children = {rng.randrange(BIG_GROUPS + NESTED_PARENTS, groups) for _ in range(3)} | {g % BIG_GROUPS}
        members += [f"cn=g{c:05d},{GROUPS}" for c in children]
    return members


def measure_raw(url: str) -> dict[str, float]:
    """(a) plain ldap3: default Server and Connection, paged_search as a generator, entries touched and dropped."""
    import ldap3

    started = time.perf_counter()
    conn = ldap3.Connection(ldap3.Server(url), SYNC_DN, SYNC_PASSWORD, auto_bind=True)
    count = 0
    for base, flt, attrs in (
        (PEOPLE, "(objectClass=inetOrgPerson)", USER_ATTRIBUTES),
        (GROUPS, "(objectClass=groupOfNames)", GROUP_ATTRIBUTES),
    ):
        for entry in conn.extend.standard.paged_search(base, flt, attributes=attrs, paged_size=500, generator=True):
            count += len(entry["attributes"]) > 0
    conn.unbind()
    return {"seconds": time.perf_counter() - started, "entries": count, "rss_mib": _peak_rss()}


def measure_syncd(url: str) -> dict[str, float]:
    """(b) LdapSource.pull() in full; then one membership change and an incremental pull."""
    import ldap3

    from syncd.settings.ldap import LdapSourceSettings
    from syncd.sources.ldap import LdapSource

    settings = LdapSourceSettings.model_validate(
        {
            "name": "bench",
            "url": url,
            "bind_dn": SYNC_DN,
            "bind_password": SYNC_PASSWORD,
            "page_size": 500,
            "users": {"base_dn": PEOPLE},
            "groups": {"base_dn": GROUPS, "nested": True},
        }
    )
    source = LdapSource(settings)
    started = time.perf_counter()
    full = source.pull()
    full_seconds = time.perf_counter() - started
    assert full.complete, full.problems
    rss = _peak_rss()
    admin = ldap3.Connection(ldap3.Server(url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    child = f"cn=g{0:05d},{GROUPS}"  # a big group nested in several parents, which must follow
    newcomer = f"uid=u{random.randrange(BIG_GROUPS * 1_000, 100_000):06d},{PEOPLE}"  # not in g00000 yet, likely
    admin.modify(child, {"member": [(ldap3.MODIFY_ADD, [newcomer])]})
    assert admin.result["result"] in (0, 20), admin.result  # 20: already a member from an earlier run
    started = time.perf_counter()
    incremental = source.pull(since=full.high_water_mark)
    incremental_seconds = time.perf_counter() - started
    assert incremental.complete and incremental.incremental, incremental.problems
    return {
        "seconds": full_seconds,
        "rss_mib": rss,
        "identities": len(full.identities),
        "groups": len(full.groups),
        "memberships": sum(len(g.members) for g in full.groups),
        "incremental_seconds": incremental_seconds,
        "incremental_groups": len(incremental.groups),
        "incremental_identities": len(incremental.identities),
    }


def _peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, url: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", mode, "--url", url], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the {mode} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate, load, serve, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=2_000)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the table shows the median")
    parser.add_argument("--measure", choices=["raw", "syncd"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps((measure_raw if args.measure == "raw" else measure_syncd)(args.url)))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="syncd-bench-ldap-"))
    started = time.perf_counter()
    server = Slapd.create(root / "slapd")
    write_ldif(root / "directory.ldif", args.users, args.groups)
    server.load(root / "directory.ldif")
    print(
        f"generated and loaded {args.users:,} users and {args.groups:,} groups in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    server.start()
    try:
        runs = [(_child("raw", server.url), _child("syncd", server.url)) for _ in range(args.repeat)]
    finally:
        server.stop()
    raw, syncd = _median([r for r, _ in runs]), _median([s for _, s in runs])
    print(
        "runs (a, b, incremental) s: "
        + "; ".join(f"{r['seconds']:.2f}, {s['seconds']:.2f}, {s['incremental_seconds']:.2f}" for r, s in runs)
    )
    _print_table(raw, syncd)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the runs; peak RSS is the largest seen."""
    middle = {key: sorted(run[key] for run in runs)[len(runs) // 2] for key in runs[0]}
    middle["rss_mib"] = max(run["rss_mib"] for run in runs)
    return middle


def _print_table(raw: dict[str, float], syncd: dict[str, float]) -> None:
    print(
        f"\nsyncd: {syncd['identities']:,} identities, {syncd['groups']:,} groups, "
        f"{syncd['memberships']:,} expanded memberships\n"
    )
    print(f"| {'run':<46} | {'wall s':>7} | {'peak RSS MiB':>12} | {'ratio':>6} |")
    print(f"|{'-' * 48}|{'-' * 9}|{'-' * 14}|{'-' * 8}|")
    print(f"| {'(a) ldap3 paged search, streamed':<46} | {raw['seconds']:7.2f} | {raw['rss_mib']:12.0f} | {1:6.2f} |")
    print(
        f"| {'(b) LdapSource.pull() full':<46} | {syncd['seconds']:7.2f} | {syncd['rss_mib']:12.0f} | "
        f"{syncd['seconds'] / raw['seconds']:6.2f} |"
    )
    label = f"incremental after 1 change ({syncd['incremental_groups']:.0f} groups re-sent)"
    print(f"| {label:<46} | {syncd['incremental_seconds']:7.2f} | {'':>12} | {'':>6} |")


if __name__ == "__main__":
    main()
