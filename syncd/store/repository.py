"""`SyncStore`: the one object the rest of syncd uses to read and write the store."""

from __future__ import annotations

from sqlalchemy import Engine

from syncd.store.held import HeldPlan, HeldStore, NotDecidable
from syncd.store.sources import IncompleteSnapshot, RecordResult, SourceState, SourceStore
from syncd.store.state import AuditEntry, Completion, RunRecord, StateStore
from syncd.store.teams import ScimTeamMember, TeamRecords

__all__ = [
    "DRIFT_STATE",
    "AuditEntry",
    "Completion",
    "HeldPlan",
    "IncompleteSnapshot",
    "NotDecidable",
    "RecordResult",
    "RunRecord",
    "ScimTeamMember",
    "SourceState",
    "SyncStore",
]


#: the source_state row that remembers the last drift check of LiteLLM
DRIFT_STATE = "litellm-drift-check"


class SyncStore(SourceStore, StateStore, TeamRecords, HeldStore):
    """Sources' records (identities, groups, memberships) and syncd's own (managed users and teams, runs, journal,
    audit, held plans)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
