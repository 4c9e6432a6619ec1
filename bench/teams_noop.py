"""Benchmark: a no-op team sync of 2,000 teams and 100,000 memberships against the fake LiteLLM makes zero writes.

    .venv/bin/python bench/teams_noop.py [--teams 2000] [--users 50000] [--teams-per-user 2] [--database-url URL]

Seeds the fake LiteLLM (served over real HTTP) with the users, syncd's teams (marker, settings, per-member budgets)
and their memberships, and the store with the matching managed users and team records, as a previous run would have
left them. Then plans the teams (`plan_teams`, the team part of the one plan) and applies that plan once: it must
read `/team/list` once and write nothing, to LiteLLM or to the store. Then one membership is removed by hand in
LiteLLM and the step runs again: exactly one write.
Prints a table of the call counts and wall times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from sqlalchemy import event, insert  # noqa: E402

from syncd.apply import Applier  # noqa: E402
from syncd.litellm import LiteLLMClient  # noqa: E402
from syncd.model import DesiredUser, ManagedTeam  # noqa: E402
from syncd.plan import MARKER, Plan, alias_key, join, plan_teams  # noqa: E402
from syncd.settings import Settings, settings_from_dict  # noqa: E402
from syncd.store import make_engine, upgrade  # noqa: E402
from syncd.store.repository import SyncStore  # noqa: E402
from syncd.store.tables import managed_users  # noqa: E402
from syncd.testing import serve_in_thread  # noqa: E402
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm  # noqa: E402

MASTER = "sk-bench-master"
MEMBER_BUDGET = 20.0


def team_alias(index: int) -> str:
    """The alias of the team with this index."""
    return f"team-{index:05d}"


def teams_of(user_index: int, teams: int, per_user: int) -> list[int]:
    """The teams a user is in: spread evenly, `per_user` each."""
    return [(user_index * per_user + k) % teams for k in range(per_user)]


def seed_fake(fake: FakeLiteLLM, users: int, teams: int, per_user: int) -> dict[int, str]:
    """Users, syncd's teams and memberships stored directly in the fake; answers team index -> team_id."""
    team_ids: dict[int, str] = {}
    for t in range(teams):
        team = fake.add_team(
            f"tid-{t:05d}",
            team_alias=team_alias(t),
            metadata={"syncd": dict(MARKER)},
            max_budget=100.0,
            budget_duration="monthly",
            tpm_limit=1000,
            models=["gpt-4o"],
        )
        team_ids[t] = team["team_id"]
    for u in range(users):
        user = fake.add_user(f"u{u:06d}", user_email=f"u{u:06d}@example.org", user_role="internal_user")
        for t in teams_of(u, teams, per_user):
            team = fake.teams[team_ids[t]]
            fake.add_member(team, user, "user")
            table = {"max_budget": MEMBER_BUDGET}
            fake.team_memberships[team["team_id"]][user["user_id"]].update(budget_id="b", litellm_budget_table=table)
    return team_ids


def seed_store(store: SyncStore, users: int, teams: int, per_user: int, team_ids: dict[int, str]) -> None:
    """The managed users and team records a previous run left."""
    stamp = datetime.now(UTC)
    rows = [
        {
            "user_id": f"u{u:06d}",
            "source": "corp",
            "external_id": f"x{u}",
            "state": "active",
            "applied": {},
            "blocked_keys": [],
            "adopted": False,
            "created_at": stamp,
            "updated_at": stamp,
        }
        for u in range(users)
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(managed_users), rows)
    members: dict[int, set[str]] = {t: set() for t in range(teams)}
    for u in range(users):
        for t in teams_of(u, teams, per_user):
            members[t].add(f"u{u:06d}")
    store.save_teams(
        ManagedTeam(alias_key(team_alias(t)), team_ids[t], True, {"team_alias": team_alias(t)}, frozenset(members[t]))
        for t in range(teams)
    )


def desired_users(users: int, teams: int, per_user: int) -> dict[str, DesiredUser]:
    """Every user as the mapping would give them: their teams by alias."""
    return {
        f"u{u:06d}": DesiredUser(
            f"u{u:06d}",
            f"u{u:06d}@example.org",
            "corp",
            f"x{u}",
            True,
            "internal_user",
            teams=tuple(team_alias(t) for t in teams_of(u, teams, per_user)),
        )
        for u in range(users)
    }


def team_step(settings: Settings, store: SyncStore, client: LiteLLMClient, desired: Any, run_id: int) -> Plan:
    """The team part of a reconcile: plan the teams (one /team/list read), then apply that plan."""
    teams = plan_teams(desired, settings.teams, client.read_teams(), store.load_teams(), store.user_states())
    plan = join(Plan(), teams)
    Applier(client, store, run_id=run_id, concurrency=settings.litellm.concurrency).apply(plan)
    return plan


def count_store_writes(engine: Any) -> Counter[str]:
    """A counter of INSERT/UPDATE/DELETE statements sent to the database from now on."""
    writes: Counter[str] = Counter()

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("INSERT", "UPDATE", "DELETE"):
            writes[verb] += 1

    event.listen(engine, "before_cursor_execute", before)
    return writes


def main() -> None:
    """Parse the arguments and run the benchmark on a temporary SQLite file or the given database."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=2000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--teams-per-user", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        run(url, args.teams, args.users, args.teams_per_user)


def run(url: str, teams: int, users: int, per_user: int) -> None:
    """Seed, run the team step twice (no-op, then one change by hand), print the figures."""
    app = create_fake_litellm(MASTER)
    fake: FakeLiteLLM = app.state.fake
    started = time.perf_counter()
    team_ids = seed_fake(fake, users, teams, per_user)
    engine = make_engine(url)
    upgrade(engine)
    store = SyncStore(engine)
    seed_store(store, users, teams, per_user, team_ids)
    desired = desired_users(users, teams, per_user)
    spec = {
        "max_budget": 100.0,
        "budget_duration": "monthly",
        "tpm_limit": 1000,
        "models": ["gpt-4o"],
        "team_member_budget": MEMBER_BUDGET,
    }
    seeded = time.perf_counter() - started
    with serve_in_thread(app) as litellm_url:
        settings = settings_from_dict(
            {
                "database": {"url": url},
                "litellm": {"url": litellm_url, "master_key": MASTER, "timeout_s": 300},
                "teams": [{"alias": team_alias(t), **spec} for t in range(teams)],
            }
        )
        list_seconds: list[float] = []
        client = LiteLLMClient(
            litellm_url, MASTER, timeout_s=300, on_call=lambda endpoint, _s, secs: list_seconds.append(secs)
        )
        run_id = store.start_run("bench")
        writes = count_store_writes(engine)
        fake.reset_calls()
        began = time.perf_counter()
        plan = team_step(settings, store, client, desired, run_id)
        noop_seconds = time.perf_counter() - began
        calls = Counter((c.method, c.path) for c in fake.calls)
        noop_store_writes = sum(writes.values())
        noop_litellm_writes = fake.write_calls()
        assert plan.empty, plan.team_counts()

        victim = "u000000"
        fake.drop_member(team_ids[teams_of(0, teams, per_user)[0]], victim)
        fake.reset_calls()
        began = time.perf_counter()
        again = team_step(settings, store, client, desired, run_id)
        one_seconds = time.perf_counter() - began
        client.close()

    memberships = sum(len(m) - 1 for m in fake.team_memberships.values())
    rows = [
        ("teams", f"{teams:,}"),
        ("memberships (syncd's)", f"{memberships:,}"),
        ("users", f"{users:,}"),
        ("seeding fake + store (s)", f"{seeded:.1f}"),
        ("no-op: GET /team/list calls", str(calls[("GET", "/team/list")])),
        ("no-op: other LiteLLM calls", str(sum(calls.values()) - calls[("GET", "/team/list")])),
        ("no-op: LiteLLM write calls", str(noop_litellm_writes)),
        ("no-op: store INSERT/UPDATE/DELETE", str(noop_store_writes)),
        ("no-op: plan changes", str(len(plan.teams))),
        ("no-op: wall time of the team step (s)", f"{noop_seconds:.2f}"),
        ("  of which GET /team/list over HTTP (s)", f"{list_seconds[0]:.2f}"),
        ("one member removed by hand: changes", ", ".join(f"{a}={n}" for a, n in again.team_counts().items() if n)),
        ("one member removed by hand: LiteLLM writes", str(fake.write_calls())),
        ("one member removed by hand: wall time (s)", f"{one_seconds:.2f}"),
    ]
    print_table(rows)
    engine.dispose()


def print_table(rows: list[tuple[str, str]]) -> None:
    """Two aligned columns: figure, value."""
    width = max(len(name) for name, _ in rows)
    print(f"{'figure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
