"""A world for team tests: a store on SQLite or PostgreSQL, the fake LiteLLM over real HTTP, a client, a config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from syncd.litellm import LiteLLMClient
from syncd.model import Group, Identity, Snapshot
from syncd.reconcile import ReconcileOptions, Reconciler
from syncd.settings import Settings, settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.store.teams import TeamStore
from syncd.team_reconcile import TeamReconciler, TeamReport, users_brought_in
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


class TeamWorld:
    """A store, a fake LiteLLM and a client wired as `syncd sync` wires them, with the team step after users."""

    def __init__(self, database_url: str, litellm_url: str, fake: FakeLiteLLM) -> None:
        self.fake, self.url, self.database_url = fake, litellm_url, database_url
        engine = make_engine(database_url)
        upgrade(engine)
        self.store = SyncStore(engine)
        self.teams = TeamStore(engine)
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

    def sync(self, **options: Any) -> TeamReport:
        """One reconcile: users (the Reconciler), then teams; answers the team step's report."""
        options.setdefault("drift_check", False)
        reconciler = Reconciler(self.settings, self.store, self.client)
        report = reconciler.run(ReconcileOptions(**options))
        if hasattr(report, "teams"):  # the Reconciler runs the team step itself
            assert isinstance(report.teams, TeamReport), report.status
            return report.teams
        assert report.status != "held", report.plan.held
        desired = reconciler.desired().users
        dry = bool(options.get("dry_run"))
        pending = users_brought_in(report.plan) if dry else ()
        return TeamReconciler(self.settings, self.store, self.client).run(
            desired, None, report.run_id, dry_run=dry, pending_users=pending
        )

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
