"""Fixtures shared by every suite: databases (SQLite and the real PostgreSQL on 127.0.0.1:5432), and the fake
LiteLLM over HTTP with a store, for running the real applier in property tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import pytest
from sqlalchemy import create_engine, delete, text

from syncd.apply import Applier, ApplyResult
from syncd.litellm import LiteLLMClient
from syncd.model import ManagedUser
from syncd.plan import Plan
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.store.tables import managed_teams
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

PG_ADMIN_URL = os.environ.get("SYNCD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run the long variants too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


class PostgresDatabases:
    """Creates throwaway databases on the test PostgreSQL server and drops them at the end of the session."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self, prefix: str = "syncd_t") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.admin.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every database this object created."""
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    """Throwaway databases on the real PostgreSQL (CI and every session of this machine kind run one)."""
    databases = PostgresDatabases(PG_ADMIN_URL)
    try:
        with databases.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    yield databases
    databases.drop_all()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: pytest.TempPathFactory) -> str:
    """An empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/syncd.db"
    postgres: PostgresDatabases = request.getfixturevalue("postgres")
    return postgres.create()


class LiteLLMProxy:
    """The fake LiteLLM over real HTTP, a client and a SQLite store: what the real applier runs against, reset
    between the examples of a property test."""

    master = "sk-property"

    def __init__(self, url: str, app: Any, database: str) -> None:
        self.app, self.client = app, LiteLLMClient(url, self.master, max_retries=0)
        engine = make_engine(database)
        upgrade(engine)
        self.store = SyncStore(engine)

    @property
    def fake(self) -> FakeLiteLLM:
        return cast(FakeLiteLLM, self.app.state.fake)

    def reset(self, managed: Mapping[str, ManagedUser] = {}, foreign: Iterable[str] = ()) -> None:
        """An empty LiteLLM and store, then the managed users in both and the foreign users in LiteLLM."""
        self.app.state.fake = FakeLiteLLM(self.master)
        self.store.forget_all()
        with self.store.engine.begin() as conn:
            conn.execute(delete(managed_teams))
        for user in managed.values():
            self.fake.add_user(user.user_id, **user.applied)
            self.store.save_managed(user)
        for user_id in foreign:
            self.fake.add_user(user_id)

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply the plan with the real applier (it must succeed)."""
        result = Applier(self.client, self.store, run_id=self.store.start_run("test"), concurrency=4).apply(plan)
        assert result.ok, result.errors
        return result


@pytest.fixture(scope="module")
def litellm_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLMProxy]:
    app = create_fake_litellm(LiteLLMProxy.master)
    with serve_in_thread(app) as url:
        proxy = LiteLLMProxy(url, app, f"sqlite:///{tmp_path_factory.mktemp('proxy')}/store.db")
        yield proxy
        proxy.client.close()
        proxy.store.engine.dispose()
