"""What syncd did: managed users and what was last applied to them, sync runs, the change journal, the audit log."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Text, bindparam, cast, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from syncd.fields import fields_digest
from syncd.model import KnownConflict, ManagedUser
from syncd.store.db import in_chunks
from syncd.store.tables import audit_log, changes, conflicts, managed_users, sync_runs

__all__ = ["AuditEntry", "Completion", "RunRecord", "StateStore"]


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes: they were stored in UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One applied change as the audit log keeps it: who, what, before, after, why."""

    actor: str
    action: str
    key: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The outcome of one journaled change, with the records to write beside it."""

    journal_id: int
    status: str  # done | failed | skipped
    error: str | None = None
    managed: ManagedUser | None = None
    audit: AuditEntry | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A sync run as stored."""

    id: int
    trigger: str
    sources: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    summary: Mapping[str, Any]
    error: str | None


class StateStore:
    """Managed users, runs, journal and audit log."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- managed users -------------------------------------------------------------------------------------------
    def load_managed(self, user_ids: Collection[str] | None = None) -> dict[str, ManagedUser]:
        """Every managed user (or those of `user_ids`) by user_id (deleted ones included: a returning person is
        created again).

        The JSON columns are read as text and decoded a few thousand records per `json.loads` call: one C call
        instead of one per row, and the dict keys every record repeats are shared between the records of a call
        (at 100,000 users: half the memory and a third of the time of decoding row by row).
        """
        c = managed_users.c
        query = select(
            c.user_id,
            c.source,
            c.external_id,
            c.state,
            cast(c.applied, Text),
            cast(c.blocked_keys, Text),
            c.suspended_at,
            c.adopted,
        )
        queries = [query] if user_ids is None else in_chunks(query, c.user_id, sorted(user_ids))
        out: dict[str, ManagedUser] = {}
        with self.engine.connect() as conn:
            for rows in (part for q in queries for part in conn.execute(q).partitions(5_000)):
                decoded = json.loads("[" + ",".join(f"[{row[4]},{row[5] or '[]'}]" for row in rows) + "]")
                for row, (applied, blocked) in zip(rows, decoded, strict=True):
                    out[row[0]] = ManagedUser(
                        user_id=row[0],
                        source=row[1],
                        external_id=row[2],
                        state=row[3],
                        applied=applied or {},
                        blocked_keys=tuple(blocked or ()),
                        suspended_at=_timestamp(row[6]),
                        adopted=row[7],
                    )
        return out

    def managed_digests(self, user_ids: Collection[str] | None = None) -> Iterator[tuple[str, str, str | None]]:
        """(user_id, state, digest of the applied fields) of every managed user (or of `user_ids`), as they are
        read: the short rows a reconcile reads first (`plan.settle`), before the whole records of the users it must
        compare."""
        c = managed_users.c
        query = select(c.user_id, c.state, c.applied_digest)
        queries = [query] if user_ids is None else in_chunks(query, c.user_id, sorted(user_ids))
        with self.engine.connect() as conn:
            for q in queries:
                for user_id, state, digest in conn.execute(q):  # noqa: UP028 (plain tuples, not Row objects)
                    yield user_id, state, digest

    def refresh_applied_digests(self, digests: Mapping[str, str]) -> None:
        """Store the applied-fields digest of records written before it existed (or by another version)."""
        params = [{"b_user": user_id, "b_digest": digest} for user_id, digest in digests.items()]
        for start in range(0, len(params), 5_000):
            with self.engine.begin() as conn:
                conn.execute(
                    update(managed_users)
                    .where(managed_users.c.user_id == bindparam("b_user"))
                    .values(applied_digest=bindparam("b_digest")),
                    params[start : start + 5_000],
                )

    @staticmethod
    def _managed(row: Any) -> ManagedUser:
        return ManagedUser(
            user_id=row["user_id"],
            source=row["source"],
            external_id=row["external_id"],
            state=row["state"],
            applied=row["applied"] or {},
            blocked_keys=tuple(row["blocked_keys"] or ()),
            suspended_at=_timestamp(row["suspended_at"]),
            adopted=row["adopted"],
        )

    def save_managed(self, user: ManagedUser, *, checked: bool = False) -> None:
        """Insert or replace the record of one managed user."""
        with self.engine.begin() as conn:
            self._save_managed(conn, user, checked=checked)

    @staticmethod
    def _save_managed(conn: Connection, user: ManagedUser, *, checked: bool = False) -> None:
        StateStore._save_many(conn, [user], checked=checked)

    @staticmethod
    def _save_many(conn: Connection, users: Sequence[ManagedUser], *, checked: bool = False) -> None:
        """Insert or replace managed-user records in one statement (an upsert on SQLite and PostgreSQL)."""
        if not users:
            return
        now = _now()
        rows = [
            {
                "user_id": user.user_id,
                "source": user.source,
                "external_id": user.external_id,
                "state": user.state,
                "applied": dict(user.applied),
                "applied_digest": fields_digest(user.applied),
                "blocked_keys": list(user.blocked_keys),
                "adopted": user.adopted,
                "suspended_at": datetime.fromtimestamp(user.suspended_at, UTC) if user.suspended_at else None,
                "created_at": now,
                "updated_at": now,
                **({"checked_at": now} if checked else {}),
            }
            for user in {u.user_id: u for u in users}.values()  # one row per user: the last record wins
        ]
        insert_for = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = insert_for(managed_users)
        replaced = {name: statement.excluded[name] for name in rows[0] if name not in ("user_id", "created_at")}
        conn.execute(statement.on_conflict_do_update(index_elements=["user_id"], set_=replaced), rows)

    def mark_checked(self, user_ids: Iterable[str]) -> None:
        """Remember that LiteLLM itself was read for these users (drift check)."""
        params = [{"b_user": user_id} for user_id in user_ids]
        if not params:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(managed_users).where(managed_users.c.user_id == bindparam("b_user")).values(checked_at=_now()),
                params,
            )

    def managed_counts(self) -> dict[str, int]:
        """Managed users by state."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(managed_users.c.state, func.count()).group_by(managed_users.c.state))
            return {row[0]: row[1] for row in rows}

    def records_bound_to(self, identities: Collection[tuple[str, str]]) -> dict[str, ManagedUser]:
        """The records (not deleted) bound to these (source, external id) pairs, by user_id."""
        wanted = set(identities)
        c = managed_users.c
        ids = sorted({external_id for _, external_id in wanted if external_id})
        found: list[Any] = []
        with self.engine.connect() as conn:
            for query in in_chunks(select(c.user_id, c.source, c.external_id, c.state), c.external_id, ids):
                found.extend(row for row in conn.execute(query) if (row[1], row[2]) in wanted and row[3] != "deleted")
        return self.load_managed([row[0] for row in found]) if found else {}

    def release_binding(self, user_id: str, *, actor: str = "operator") -> ManagedUser | None:
        """Forget the record (the binding) of one LiteLLM user, with an audit entry; None if there was none."""
        record = self.load_managed([user_id]).get(user_id)
        if record is None:
            return None
        with self.engine.begin() as conn:
            conn.execute(delete(managed_users).where(managed_users.c.user_id == user_id))
            conn.execute(delete(conflicts).where(conflicts.c.user_id == user_id))
            conn.execute(
                insert(audit_log).values(
                    at=_now(),
                    run_id=None,
                    actor=actor,
                    action="release",
                    key=user_id,
                    before={"source": record.source, "external_id": record.external_id, "state": record.state},
                    after=None,
                    reason="binding released by an operator (syncd release)",
                )
            )
        return record

    # -- conflicts --------------------------------------------------------------------------------------------------
    def load_conflicts(self, user_ids: Collection[str] | None = None) -> dict[str, KnownConflict]:
        """The stored conflicts (of everyone, or of `user_ids`) by user_id."""
        c = conflicts.c
        query = select(c.user_id, c.source, c.external_id, c.kind, c.reason, c.other, c.inputs_digest)
        queries = [query] if user_ids is None else in_chunks(query, c.user_id, sorted(user_ids))
        with self.engine.connect() as conn:
            return {row[0]: KnownConflict(*row) for q in queries for row in conn.execute(q)}

    def replace_conflicts(self, found: Iterable[KnownConflict], *, user_ids: Collection[str] | None = None) -> None:
        """Store the conflicts a run found: in place of every stored one, or of those of `user_ids` (targeted)."""
        now = _now()
        rows = {
            conflict.user_id: {
                "user_id": conflict.user_id,
                "source": conflict.source,
                "external_id": conflict.external_id,
                "kind": conflict.kind,
                "reason": conflict.reason,
                "other": conflict.other,
                "inputs_digest": conflict.inputs_digest,
                "detected_at": now,
            }
            for conflict in found
        }
        with self.engine.begin() as conn:
            if user_ids is None:
                conn.execute(delete(conflicts))
            else:
                for query in in_chunks(delete(conflicts), conflicts.c.user_id, sorted(set(user_ids) | set(rows))):
                    conn.execute(query)
            if rows:
                conn.execute(insert(conflicts), list(rows.values()))

    def conflict_rows(self, limit: int = 100) -> list[dict[str, Any]]:
        """The stored conflicts as rows (status page, explain), oldest first."""
        query = select(conflicts).order_by(conflicts.c.detected_at, conflicts.c.user_id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def conflict_count(self) -> int:
        """How many conflicts are stored."""
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(conflicts)) or 0)

    # -- runs ------------------------------------------------------------------------------------------------------
    def start_run(self, trigger: str, sources: Sequence[str] = ()) -> int:
        """Open a run and return its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(sync_runs).values(
                    trigger=trigger,
                    sources=",".join(sources) or None,
                    status="running",
                    started_at=_now(),
                    summary={},
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def finish_run(self, run_id: int, status: str, summary: Mapping[str, Any], error: str | None = None) -> None:
        """Close a run with its outcome."""
        with self.engine.begin() as conn:
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.id == run_id)
                .values(status=status, finished_at=_now(), summary=dict(summary), error=error)
            )

    def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit)).mappings().all()
        return [RunRecord(**dict(row)) for row in rows]

    def last_success_at(self) -> float | None:
        """Unix time of the last successful run (None if there was none)."""
        with self.engine.connect() as conn:
            value = conn.scalar(select(func.max(sync_runs.c.finished_at)).where(sync_runs.c.status == "success"))
        return _timestamp(value)

    # -- journal ----------------------------------------------------------------------------------------------------
    def journal(
        self,
        run_id: int,
        planned: Sequence[Mapping[str, Any]],
        *,
        keys: Sequence[str] | None = None,
        scope: str | None = None,
    ) -> list[int]:
        """Record each planned change as pending (in plan order); return their journal ids.

        `keys`: each change's journal key (default: its user_id). Changes an earlier run left pending are superseded:
        all of them, or with `scope` only those whose key starts with it (the team step's `team:`).
        """
        now = _now()
        rows = [
            {
                "run_id": run_id,
                "key": keys[i] if keys is not None else change.get("user_id") or change.get("key"),
                "action": change["action"],
                "change": dict(change),
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for i, change in enumerate(planned)
        ]
        with self.engine.begin() as conn:
            if rows or scope is not None:
                stale = update(changes).where(changes.c.status == "pending")
                if scope is not None:
                    stale = stale.where(changes.c.key.like(f"{scope}%"))
                conn.execute(stale.values(status="superseded", updated_at=now))
            if not rows:
                return []
            result = conn.execute(insert(changes).returning(changes.c.id, sort_by_parameter_order=True), rows)
            return [int(row[0]) for row in result]

    def complete_change(
        self,
        journal_id: int,
        *,
        status: str,
        error: str | None = None,
        managed: ManagedUser | None = None,
        audit: AuditEntry | None = None,
        run_id: int | None = None,
    ) -> None:
        """Mark one journaled change done/failed/skipped and, in the same transaction, save the user and audit it."""
        self.complete_changes([Completion(journal_id, status, error, managed, audit)], run_id=run_id)

    def complete_changes(self, completions: Sequence[Completion], *, run_id: int | None = None) -> None:
        """Record several outcomes in one transaction (apply batches what finished together)."""
        if not completions:
            return
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                update(changes)
                .where(changes.c.id == bindparam("b_id"))
                .values(attempts=changes.c.attempts + 1, updated_at=now),
                [{"b_id": c.journal_id, "status": c.status, "error": c.error} for c in completions],
            )
            audits = [
                {
                    "at": now,
                    "run_id": run_id,
                    "actor": c.audit.actor,
                    "action": c.audit.action,
                    "key": c.audit.key,
                    "before": _jsonable(c.audit.before),
                    "after": _jsonable(c.audit.after),
                    "reason": c.audit.reason,
                }
                for c in completions
                if c.audit is not None
            ]
            if audits:
                conn.execute(insert(audit_log), audits)
            self._save_many(conn, [c.managed for c in completions if c.managed is not None])

    def journal_counts(self, run_id: int | None = None) -> dict[str, int]:
        """Journaled changes by status (of one run, or all)."""
        query = select(changes.c.status, func.count()).group_by(changes.c.status)
        if run_id is not None:
            query = query.where(changes.c.run_id == run_id)
        with self.engine.connect() as conn:
            return {row[0]: row[1] for row in conn.execute(query)}

    def failed_changes(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest failed changes with their errors."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(changes.c.id, changes.c.run_id, changes.c.key, changes.c.action, changes.c.error)
                .where(changes.c.status == "failed")
                .order_by(changes.c.id.desc())
                .limit(limit)
            ).mappings()
            return [dict(row) for row in rows]

    def audit_entries(self, key: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The audit log, newest first, optionally for one user."""
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if key is not None:
            query = query.where(audit_log.c.key == key)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def forget_all(self) -> None:
        """Delete every managed-user record (tests and `syncd db reset` only)."""
        with self.engine.begin() as conn:
            conn.execute(delete(managed_users))


def _jsonable(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else {key: value[key] for key in value}
