"""`SyncStore`: the one object the rest of syncd uses to read and write the store."""

from __future__ import annotations

from sqlalchemy import Engine

from syncd.store.held import HeldPlan, HeldStore, NotDecidable
from syncd.store.sources import IncompleteSnapshot, RecordResult, SourceState, SourceStore
from syncd.store.state import AuditEntry, Completion, RunRecord, StateStore

__all__ = [
    "AuditEntry",
    "Completion",
    "HeldPlan",
    "IncompleteSnapshot",
    "NotDecidable",
    "RecordResult",
    "RunRecord",
    "SourceState",
    "SyncStore",
]


class SyncStore(SourceStore, StateStore, HeldStore):
    """Sources' records (identities, groups, memberships) and syncd's own (managed users, runs, journal, audit, held
    plans)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
