"""Held plans and the deactivation history: what the guard held, who decided about it, what was deactivated when.

A held plan moves held -> approved | rejected -> applied | superseded (a rejected plan may still be approved). Every
approval and rejection is written to the audit log with who made it, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from syncd.store.tables import audit_log, deactivation_history, held_plans

__all__ = ["OPEN", "HeldPlan", "HeldStore", "NotDecidable"]

#: the statuses of a held plan that still waits (syncd.guard.OPEN says the same for the guard's decisions)
OPEN = ("held", "approved", "rejected")


class NotDecidable(Exception):
    """The held plan does not exist, or is closed (applied or superseded): nothing to approve or reject."""


@dataclass(frozen=True, slots=True)
class HeldPlan:
    """A held plan as stored."""

    id: int
    run_id: int | None
    last_run_id: int | None
    status: str
    reason: str
    digest: str
    changes: tuple[Mapping[str, Any], ...]
    held_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None
    closed_run_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the plan and the people it would deactivate, and why."""
        people = [{k: c.get(k) for k in ("action", "user_id", "source", "external_id", "reason")} for c in self.changes]
        return {
            "id": self.id,
            "run_id": self.run_id,
            "last_run_id": self.last_run_id,
            "status": self.status,
            "reason": self.reason,
            "digest": self.digest,
            "held_at": _iso(self.held_at),
            "decided_at": _iso(self.decided_at),
            "decided_by": self.decided_by,
            "note": self.note,
            "closed_run_id": self.closed_run_id,
            "deactivations": people,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite hands back naive datetimes: they were stored in UTC
        return value.replace(tzinfo=UTC)
    return value


def _iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _plan(row: Any) -> HeldPlan:
    held_at = _aware(row["held_at"])
    assert held_at is not None
    return HeldPlan(
        id=int(row["id"]),
        run_id=row["run_id"],
        last_run_id=row["last_run_id"],
        status=row["status"],
        reason=row["reason"],
        digest=row["digest"],
        changes=tuple(row["changes"] or ()),
        held_at=held_at,
        decided_at=_aware(row["decided_at"]),
        decided_by=row["decided_by"],
        note=row["note"],
        closed_run_id=row["closed_run_id"],
    )


class HeldStore:
    """Held plans and the deactivation history (a part of SyncStore)."""

    engine: Engine

    # -- held plans -------------------------------------------------------------------------------------------------
    def held_plans(self, statuses: Collection[str] = OPEN, limit: int = 50) -> list[HeldPlan]:
        """The held plans in these statuses (default: open), newest first."""
        query = select(held_plans).order_by(held_plans.c.id.desc()).limit(limit)
        if statuses:
            query = query.where(held_plans.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            return [_plan(row) for row in conn.execute(query).mappings()]

    def held_plan(self, plan_id: int) -> HeldPlan | None:
        """One held plan, in any status."""
        with self.engine.connect() as conn:
            row = conn.execute(select(held_plans).where(held_plans.c.id == plan_id)).mappings().first()
        return None if row is None else _plan(row)

    def held_plans_after(self, plan_id: int) -> list[HeldPlan]:
        """The plans held since plan `plan_id` (oldest first): a notifier's 'new held plans'."""
        query = select(held_plans).where(held_plans.c.id > plan_id).order_by(held_plans.c.id)
        with self.engine.connect() as conn:
            return [_plan(row) for row in conn.execute(query).mappings()]

    def hold_plan(self, *, run_id: int | None, reason: str, digest: str, changes: Sequence[Any]) -> int:
        """Store a new held plan; return its id."""
        now = _now()
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(held_plans).values(
                    run_id=run_id,
                    last_run_id=run_id,
                    status="held",
                    reason=reason,
                    digest=digest,
                    changes=[change.to_dict() for change in changes],
                    deactivations=len(changes),
                    held_at=now,
                    updated_at=now,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def still_held(self, plan_id: int, *, run_id: int | None, reason: str | None) -> None:
        """A later run holds the same plan again (its reason may read otherwise: counts in the window move)."""
        values: dict[str, Any] = {"last_run_id": run_id, "updated_at": _now()}
        if reason:
            values["reason"] = reason
        with self.engine.begin() as conn:
            conn.execute(update(held_plans).where(held_plans.c.id == plan_id).values(**values))

    def close_held_plans(self, plan_ids: Iterable[int], status: str, *, run_id: int | None) -> None:
        """Mark plans applied or superseded by run `run_id`."""
        ids = list(plan_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(held_plans)
                .where(held_plans.c.id.in_(ids), held_plans.c.status.in_(list(OPEN)))
                .values(status=status, closed_run_id=run_id, updated_at=_now())
            )

    def decide_held_plan(self, plan_id: int, decision: str, *, by: str, note: str | None = None) -> HeldPlan:
        """Approve or reject an open held plan, with an audit entry naming who; NotDecidable if it is not open."""
        if decision not in ("approved", "rejected"):
            raise ValueError(f"{decision!r} is not approved or rejected")
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(select(held_plans).where(held_plans.c.id == plan_id)).mappings().first()
            if row is None:
                raise NotDecidable(f"no held plan {plan_id}")
            if row["status"] not in ("held", "rejected") or row["status"] == decision:
                raise NotDecidable(f"held plan {plan_id} is {row['status']}: nothing to {decision[:-1]}")
            conn.execute(
                update(held_plans)
                .where(held_plans.c.id == plan_id)
                .values(status=decision, decided_at=now, decided_by=by[:200], note=note, updated_at=now)
            )
            conn.execute(
                insert(audit_log).values(
                    at=now,
                    run_id=row["last_run_id"],
                    actor=by[:100],
                    action="approve" if decision == "approved" else "reject",
                    key=f"held-plan:{plan_id}",
                    before={"status": row["status"], "digest": row["digest"]},
                    after={"status": decision, "deactivations": row["deactivations"], "note": note},
                    reason=note or f"held plan {plan_id} {decision} by {by}",
                )
            )
        found = self.held_plan(plan_id)
        assert found is not None
        return found

    # -- deactivation history ------------------------------------------------------------------------------------
    def record_deactivations(self, done: Sequence[tuple[str, str, bool]], *, run_id: int | None, at: float) -> None:
        """Record deactivations applied at unix time `at`: (user_id, action, counted by the guard)."""
        if not done:
            return
        now = datetime.fromtimestamp(at, UTC)
        rows = [
            {"at": now, "user_id": user_id, "action": action, "run_id": run_id, "counted": counted}
            for user_id, action, counted in done
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(deactivation_history), rows)

    def counted_deactivations(self, since: float) -> list[float]:
        """The unix times of the deactivations the guard counted, applied since `since` (unix time)."""
        c = deactivation_history.c
        start = datetime.fromtimestamp(since, UTC)
        query = select(c.at).where(c.at >= start, c.counted.is_(True)).order_by(c.at)
        with self.engine.connect() as conn:
            return [at.timestamp() for at in (_aware(row[0]) for row in conn.execute(query)) if at is not None]

    def deactivations_since(self, seconds: float) -> int:
        """How many deactivations were applied in the last `seconds`, counted or not (status page)."""
        start = _now() - timedelta(seconds=seconds)
        query = select(func.count()).select_from(deactivation_history).where(deactivation_history.c.at >= start)
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)
