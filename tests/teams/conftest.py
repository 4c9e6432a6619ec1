"""A world for team tests: a store on SQLite or PostgreSQL, the fake LiteLLM over real HTTP, a client, a config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from syncd.apply import ApplyResult
from syncd.litellm import LiteLLMClient
from syncd.model import Group, Identity, Snapshot
from syncd.plan import Plan, TeamChange
from syncd.reconcile import ReconcileOptions, Reconciler, RunReport
from syncd.settings import Settings, settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

MASTER = "sk-teams-master"
MAPPINGS = [
    {"group": "llm-users", "role": "internal_user", "models": ["gpt-4o"], "teams": ["platform"]},
    {"group": "llm-power", "max_budget": 100, "teams": ["research", "platform"]},
    {"group": "llm-admins", "role": "proxy_admin"},
]
TEAMS = [
    {
        "alias": "platform",
        "models": ["gpt-4o"],
        "max_budget": 500.0,
        "budget_duration": "monthly",
        "tpm_limit": 10000,
        "rpm_limit": 100,
        "team_member_budget": 25.0,
    },
]
PEOPLE = {
    "alice": {"groups": ["llm-users"]},
    "bob": {"groups": ["llm-users", "llm-power"]},
    "carol": {"groups": ["llm-admins", "llm-users"]},
    "dave": {"groups": ["marketing"]},
}


class TeamPart:
    """The team part of one plan, read as the team tests read it."""

    def __init__(self, plan: Plan) -> None:
        self.whole = plan
        self.changes: tuple[TeamChange, ...] = plan.teams
        self.problems = plan.problems
        self.unchanged = plan.teams_unchanged
        self.waiting = plan.teams_waiting

    def counts(self) -> dict[str, int]:
        return self.whole.team_counts()

    @property
    def empty(self) -> bool:
        return not self.changes


class TeamRun:
    """A run's report with its plan's team part (`plan`) and the team changes' outcomes (`applied`)."""

    def __init__(self, report: RunReport) -> None:
        self.report, self.status = report, report.status
        self.plan = TeamPart(report.plan)
        self.applied: ApplyResult | None = None
        if report.applied is not None:
            teams = {str(c.action) for c in report.plan.teams}
            by_action = {a: n for a, n in report.applied.by_action.items() if a in teams}
            errors = [e for e in report.applied.errors if e[0].startswith("team ")]
            self.applied = ApplyResult(
                done=sum(by_action.values()), failed=len(errors), by_action=by_action, errors=errors
            )


class TeamWorld:
    """A store, a fake LiteLLM and a client wired as `syncd sync` wires them, with the team step after users."""

    def __init__(self, database_url: str, litellm_url: str, fake: FakeLiteLLM) -> None:
        self.fake, self.url, self.database_url = fake, litellm_url, database_url
        engine = make_engine(database_url)
        upgrade(engine)
        self.store = SyncStore(engine)
        self.teams = self.store
        self.client: Any = LiteLLMClient(litellm_url, MASTER, max_retries=2, backoff_base_s=0.01)
        self.settings = self.configure()

    def configure(self, **extra: Any) -> Settings:
        data: dict[str, Any] = {
            "database": {"url": self.database_url},
            "litellm": {"url": self.url, "master_key": MASTER, "concurrency": 4},
            "mappings": MAPPINGS,
            "teams": TEAMS,
        }
        for key, value in extra.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        self.settings = settings_from_dict(data)
        return self.settings

    def record(self, people: dict[str, dict[str, Any]], source: str = "corp") -> None:
        """Record a full snapshot: user_id -> {groups: [...], active: bool}."""
        identities = [
            Identity(source, f"{source}-{uid}", uid, f"{uid}@example.com", None, p.get("active", True))
            for uid, p in people.items()
        ]
        names = sorted({g for p in people.values() for g in p.get("groups", ())})
        groups = [
            Group(
                source,
                f"g-{n}",
                n,
                None,
                frozenset(f"{source}-{u}" for u, p in people.items() if n in p.get("groups", ())),
            )
            for n in names
        ]
        self.store.record_snapshot(Snapshot(source, identities, groups))

    def sync(self, **options: Any) -> TeamRun:
        """One reconcile, as `syncd sync` runs it; answers its team part."""
        options.setdefault("drift_check", False)
        self.report = Reconciler(self.settings, self.store, self.client).run(ReconcileOptions(**options))
        return TeamRun(self.report)

    def team(self, alias: str) -> dict[str, Any]:
        """The one fake team with this alias."""
        (team,) = [t for t in self.fake.teams.values() if t["team_alias"] == alias]
        return team

    def members(self, alias: str) -> set[str]:
        """The user_ids in a team, LiteLLM's own admin left out."""
        return {m["user_id"] for m in self.team(alias)["members_with_roles"]} - {"default_user_id"}

    def member_budget(self, alias: str, user_id: str) -> float | None:
        """A member's max_budget_in_team as the fake holds it."""
        membership = self.fake.team_memberships[self.team(alias)["team_id"]][user_id]
        table = membership["litellm_budget_table"]
        return table["max_budget"] if table else None


@pytest.fixture
def world(database_url: str) -> Iterator[TeamWorld]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        w = TeamWorld(database_url, url, app.state.fake)
        yield w
        w.client.close()
        w.store.engine.dispose()
