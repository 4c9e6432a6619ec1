"""Plan at scale: 100,000 desired users against 100,000 managed (and current) users with 5% changed.

Each scenario runs in a fresh child process so its peak RSS is its own. Run: `.venv/bin/python bench/plan_bench.py
[--users 100000] [--repeat 3]`. Target (issue 2): under 3 s and 400 MiB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from syncd.mapping import desired_state, rules_from_settings
from syncd.model import CurrentUser, Group, Identity, ManagedUser
from syncd.plan import PlanPolicy, desired_fields, make_plan
from syncd.settings import settings_from_dict

GROUPS = 200


def _world(users: int, changed: float) -> tuple[Any, list[Identity], list[Group], dict[str, ManagedUser], Any]:
    settings = settings_from_dict(
        {
            "mappings": [
                {
                    "group": f"grp-{g:03}",
                    "models": [f"model-{g % 7}"],
                    "max_budget": float(g % 50),
                    "budget_duration": "monthly",
                    "tpm_limit": 1000 * (g % 9 + 1),
                    "role": "internal_user",
                }
                for g in range(GROUPS)
            ]
        }
    )
    rules = rules_from_settings(settings)
    identities = [Identity("corp", f"e{i}", f"user{i}", f"user{i}@example.com", f"User {i}") for i in range(users)]
    members: list[set[str]] = [set() for _ in range(GROUPS)]
    for i in range(users):
        for g in (i % GROUPS, (i * 7 + 3) % GROUPS):
            members[g].add(f"e{i}")
    groups = [Group("corp", f"g{g}", f"grp-{g:03}", None, frozenset(members[g])) for g in range(GROUPS)]
    desired = desired_state(identities, groups, rules)
    managed = {}
    step = int(1 / changed)
    for n, (uid, user) in enumerate(desired.users.items()):
        applied = desired_fields(user)
        if n % step == 0:
            applied = {**applied, "max_budget": 12345.0}
        managed[uid] = ManagedUser(uid, "corp", user.external_id, "active", applied)
    return rules, identities, groups, managed, desired


def scenario(name: str, users: int, changed: float) -> dict[str, Any]:
    """Run one scenario in this process and return its figures."""
    rules, identities, groups, managed, desired = _world(users, changed)
    current = None
    if name == "vs-litellm":
        current = {
            uid: CurrentUser(
                uid,
                m.applied.get("user_email"),
                {k: v for k, v in m.applied.items() if k != "metadata"},
                m.applied["metadata"],
            )
            for uid, m in managed.items()
        }
    del desired
    started = time.perf_counter()
    state = desired_state(identities, groups, rules)
    mapped = time.perf_counter()
    plan = make_plan(state, managed, current, PlanPolicy(allow_mass_deactivation=True))
    done = time.perf_counter()
    return {
        "scenario": name,
        "users": users,
        "changes": len(plan.changes),
        "mapping_s": mapped - started,
        "plan_s": done - mapped,
        "total_s": done - started,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(name: str, users: int, changed: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--users", str(users), "--changed", str(changed)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(scenario(args.child, args.users, args.changed)))
        return
    print(
        f"plan benchmark: {args.users:,} users, {GROUPS} mapped groups, {args.changed:.0%} changed, "
        f"{os.cpu_count()} cores, median of {args.repeat} runs"
    )
    print(f"{'scenario':<14}{'changes':>9}{'mapping s':>11}{'plan s':>9}{'total s':>9}{'peak MiB':>10}")
    for name in ("vs-store", "vs-litellm"):
        runs = [_child(name, args.users, args.changed) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("mapping_s", "plan_s", "total_s", "peak_rss_mib")}
        print(
            f"{name:<14}{runs[0]['changes']:>9}{med['mapping_s']:>11.2f}{med['plan_s']:>9.2f}{med['total_s']:>9.2f}"
            f"{med['peak_rss_mib']:>10.0f}"
        )
    print("target: total under 3 s, peak under 400 MiB (the peak includes building the inputs)")


if __name__ == "__main__":
    main()
