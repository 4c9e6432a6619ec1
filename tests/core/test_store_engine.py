"""The PostgreSQL pool: a connection that died while idle is replaced before a request sees it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from syncd.store import db as store_db
from syncd.store.db import make_engine


def _kill_backends(admin_url: str, database: str) -> int:
    admin = make_engine(admin_url)
    with admin.begin() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        ).scalar()
    admin.dispose()
    return int(killed or 0)


def test_a_connection_killed_while_idle_is_pinged_and_replaced(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres.create()
    engine = make_engine(url)
    database = engine.url.database or ""
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    assert _kill_backends(url, database) >= 1

    monkeypatch.setattr(store_db, "IDLE_PING_S", 0.0)  # it has been idle long enough
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 2")).scalar() == 2
    engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trade-off, stated: a server lost between two requests in quick succession fails the next one, once."""
    url = postgres.create()
    engine = make_engine(url)
    database = engine.url.database or ""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    _kill_backends(url, database)

    monkeypatch.setattr(store_db, "IDLE_PING_S", 3600.0)
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with engine.connect() as conn:  # the pool was renewed
        assert conn.execute(text("SELECT 3")).scalar() == 3
    engine.dispose()
