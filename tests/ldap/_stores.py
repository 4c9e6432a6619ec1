"""Stores for the change-based pull tests (content sync and DirSync), and what a store holds as present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.store import make_engine
from syncd.store.repository import SyncStore
from syncd.store.tables import metadata

__all__ = ["new_store", "present", "store_at"]


def store_at(url: str) -> SyncStore:
    """A SyncStore on an empty database (SQLite or PostgreSQL)."""
    engine = make_engine(url)
    metadata.create_all(engine)
    return SyncStore(engine)


def new_store(path: Path) -> SyncStore:
    """A SyncStore on a fresh SQLite file."""
    path.unlink(missing_ok=True)
    return store_at(f"sqlite:///{path}")


def present(store: SyncStore, source: str) -> dict[str, Any]:
    """What the store holds as present for a source: identities, groups and memberships."""
    dump = store.dump_source(source)
    people = {k: v for k, v in dump["identities"].items() if v["present"]}
    teams = {k: v for k, v in dump["groups"].items() if v["present"]}
    members = {g: m for g, m in dump["memberships"].items() if g in teams and m}
    return {"identities": people, "groups": teams, "memberships": members}
