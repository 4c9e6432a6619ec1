"""Apply a plan to LiteLLM: exactly its changes, with bounded concurrency, each one journaled.

Every change is written to the journal as pending before anything is sent; its outcome (done, failed with the
LiteLLM error, skipped) is written with the managed-user record and the audit entry in one transaction. Nothing here
re-diffs or reads the config: a crash or an outage leaves the store saying exactly what was applied, and the next
reconcile converges from there. LiteLLM calls run in worker threads; the store is written from the calling thread.

Idempotence where LiteLLM is not: a 409 on create is resolved by reading the user (syncd's marker, or
`adopt_existing`, turns it into an update; anything else is a conflict), never by a second user. A suspension
records the keys it is about to block before blocking them, so an interrupted suspension resumes with the same keys
and a reactivation unblocks exactly those.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from syncd.model import ManagedUser
from syncd.plan import Change, KnownConflict, Plan, marker
from syncd.store.repository import AuditEntry, Completion, SyncStore

__all__ = ["Applier", "ApplyResult", "ApplyStopped", "PlanHeld"]

log = logging.getLogger(__name__)

_LIMITS = ("tpm_limit", "rpm_limit", "max_budget", "budget_duration")
#: answers to a user write that the same request will always get again: a conflict, not a failure to retry
_REFUSALS = (400, 409, 422)
_WRITES = ("create", "adopt", "update", "reactivate")


class PlanHeld(Exception):
    """A held plan (deactivation guard) was handed to apply."""


class ApplyStopped(Exception):
    """Apply stopped taking new changes (the process is stopping); those in flight were finished and journaled."""


class _Client(Protocol):
    def new_user(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def update_user(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def get_users(self, user_ids: Any, *, batch: int = 100) -> list[dict[str, Any]]: ...
    def users_with_email(self, email: str) -> list[dict[str, Any]]: ...
    def delete_users(self, user_ids: Any) -> None: ...
    def list_keys(self, user_id: str) -> list[dict[str, Any]]: ...
    def block_key(self, key: str) -> Any: ...
    def unblock_key(self, key: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str  # done | failed | skipped
    managed: ManagedUser | None = None
    error: str | None = None
    action: str | None = None  # what was really done when it differs from the plan (create -> adopt)
    after: Mapping[str, Any] | None = None
    conflict: KnownConflict | None = None  # what LiteLLM refused, stored so that it is not retried as it is


@dataclass(slots=True)
class ApplyResult:
    """What applying one plan did."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    by_action: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (user_id, action, message)
    #: changes LiteLLM refused in a way retrying cannot fix (skipped, not failed)
    conflicts: list[KnownConflict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no change failed."""
        return self.failed == 0


def _payload(fields: Mapping[str, Any], names: Any, *, clear: bool) -> dict[str, Any]:
    """The /user/new or /user/update body for these fields; `clear` sends explicit nulls for removed limits."""
    body: dict[str, Any] = {}
    for name in names:
        value = fields.get(name)
        if name == "models" and not value:
            continue  # [] means every model in LiteLLM and is ignored by /user/update
        if value is None and not (clear and name in _LIMITS):
            continue
        body[name] = list(value) if isinstance(value, tuple) else value
    return body


class Applier:
    """Runs plans against LiteLLM for one sync run."""

    def __init__(
        self,
        client: _Client,
        store: SyncStore,
        *,
        run_id: int,
        concurrency: int = 8,
        adopt_existing: bool = False,
        on_outcome: Callable[[Change, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.client, self.store, self.run_id = client, store, run_id
        self.concurrency, self.adopt_existing = concurrency, adopt_existing
        self.on_outcome, self.clock, self.should_stop = on_outcome, clock, should_stop

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change of the plan; raise PlanHeld for a held plan."""
        if plan.held:
            raise PlanHeld(plan.held)
        result = ApplyResult()
        journal_ids = self.store.journal(self.run_id, [change.to_dict() for change in plan.changes])
        work = list(zip(journal_ids, plan.changes, strict=True))
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="apply") as pool:
            running: dict[Future[_Outcome], tuple[int, Change]] = {}
            try:
                for journal_id, change in work:
                    while len(running) >= self.concurrency * 2:
                        self._collect(running, result, block=True)
                    if self.should_stop is not None and self.should_stop():
                        raise ApplyStopped("stopped taking new changes")
                    running[pool.submit(self._execute, change)] = (journal_id, change)
                while running:
                    self._collect(running, result, block=True)
            except BaseException:
                for future in running:
                    future.cancel()
                self._drain(running, result)
                raise
        return result

    def _collect(
        self, running: dict[Future[_Outcome], tuple[int, Change]], result: ApplyResult, *, block: bool
    ) -> None:
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED, timeout=None if block else 0)
        batch, crash = [], None
        for future in finished:
            journal_id, change = running.pop(future)
            try:
                outcome = future.result()
            except BaseException as exc:  # a worker interrupted: recorded, then raised once the batch is written
                crash = crash or exc
                outcome = _Outcome("failed", error=f"interrupted: {exc!r}")
            batch.append((journal_id, change, outcome))
        self._record(batch, result)
        if crash is not None:
            raise crash

    def _drain(self, running: dict[Future[_Outcome], tuple[int, Change]], result: ApplyResult) -> None:
        # finish the changes in flight so the journal says what really happened; cancelled ones stay pending
        batch = []
        for future, (journal_id, change) in list(running.items()):
            if future.cancelled():
                continue
            try:
                outcome = future.result()
            except BaseException as exc:
                outcome = _Outcome("failed", error=f"interrupted: {exc!r}")
            batch.append((journal_id, change, outcome))
        self._record(batch, result)

    def _record(self, batch: list[tuple[int, Change, _Outcome]], result: ApplyResult) -> None:
        """Write what finished together in one transaction, then count it."""
        completions = []
        for journal_id, change, outcome in batch:
            audit = None
            if outcome.status == "done":
                action = outcome.action or change.action
                audit = AuditEntry(
                    change.source or "syncd", action, change.user_id, change.before, outcome.after, change.reason
                )
            completions.append(Completion(journal_id, outcome.status, outcome.error, outcome.managed, audit))
        self.store.complete_changes(completions, run_id=self.run_id)
        for _, change, outcome in batch:
            self._count(change, outcome, result)

    def _count(self, change: Change, outcome: _Outcome, result: ApplyResult) -> None:
        action = outcome.action or change.action
        if outcome.status == "done":
            result.done += 1
            result.by_action[action] = result.by_action.get(action, 0) + 1
        elif outcome.status == "failed":
            result.failed += 1
            result.errors.append((change.user_id, change.action, outcome.error or "failed"))
            log.warning(
                "change failed", extra={"user_id": change.user_id, "action": change.action, "error": outcome.error}
            )
        else:
            result.skipped += 1
            if outcome.conflict is not None:
                result.conflicts.append(outcome.conflict)
                log.warning("change refused: a conflict", extra={"user_id": change.user_id, "error": outcome.error})
        if self.on_outcome is not None:
            self.on_outcome(change, outcome.status)

    # -- one change (worker thread) -------------------------------------------------------------------------------
    def _execute(self, change: Change) -> _Outcome:
        handler = getattr(self, f"_do_{change.action}")
        try:
            return handler(change)
        except Exception as exc:
            if change.action in _WRITES and getattr(exc, "status", None) in _REFUSALS:
                reason = f"LiteLLM refused the {change.action}: {_describe(exc)}"
                return _Outcome("skipped", error=reason, conflict=_conflict(change, "refused", reason))
            return _Outcome("failed", error=_describe(exc))

    def _do_conflict(self, change: Change) -> _Outcome:
        return _Outcome("skipped", error=change.reason)

    def _do_create(self, change: Change) -> _Outcome:
        fields = dict(change.after or {})
        body = {
            "user_id": change.user_id,
            **_payload(fields, fields, clear=False),
            "auto_create_key": change.auto_create_key,
        }
        try:
            self.client.new_user(body)
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise
            return self._resolve_conflict(change, fields, exc)
        return _Outcome("done", self._managed(change, fields, "active"), after=fields)

    def _resolve_conflict(self, change: Change, fields: dict[str, Any], exc: Exception) -> _Outcome:
        """A 409 on create: the user exists already (ours after a crash, adoptable, or someone else's)."""
        found = self.client.get_users([change.user_id])
        existing = next((u for u in found if u.get("user_id") == change.user_id), None)
        if existing is None:
            email = str(fields.get("user_email") or "")
            holders = [u for u in self.client.users_with_email(email) if u.get("user_id") != change.user_id]
            other = str(holders[0]["user_id"]) if holders else None
            why = f"the email {email} belongs to LiteLLM user {other}" if other else "the email is taken"
            reason = f"LiteLLM refused the user: {_describe(exc)} ({why})"
            return _Outcome("skipped", error=reason, conflict=_conflict(change, "email_taken", reason, other))
        metadata = existing.get("metadata") or {}
        ours = isinstance(metadata.get("syncd"), dict) and metadata["syncd"].get("managed") is True
        if not ours and not self.adopt_existing:
            reason = "a LiteLLM user syncd does not manage holds this user_id; not touched"
            conflict = _conflict(change, "user_id_taken", reason, change.user_id)
            return _Outcome("skipped", error=reason, conflict=conflict)
        fields["metadata"] = {**metadata, **fields.get("metadata", {})}
        self.client.update_user({"user_id": change.user_id, **_payload(fields, fields, clear=True)})
        managed = self._managed(change, fields, "active", adopted=not ours)
        return _Outcome("done", managed, action="adopt", after=fields)

    def _do_adopt(self, change: Change) -> _Outcome:
        fields = dict(change.after or {})
        self.client.update_user({"user_id": change.user_id, **_payload(fields, fields, clear=True)})
        return _Outcome("done", self._managed(change, fields, "active", adopted=change.adopted), after=fields)

    def _do_update(self, change: Change) -> _Outcome:
        fields = dict(change.after or {})
        names = [diff.field for diff in change.diffs if diff.field != "metadata"]
        body = {"user_id": change.user_id, **_payload(fields, names, clear=True), "metadata": fields["metadata"]}
        self.client.update_user(body)
        return _Outcome("done", self._managed(change, fields, "active", adopted=change.adopted), after=fields)

    def _do_reactivate(self, change: Change) -> _Outcome:
        fields = dict(change.after or {})
        for key in change.blocked_keys:
            self._ignore_missing(self.client.unblock_key, key)
        self.client.update_user({"user_id": change.user_id, **_payload(fields, fields, clear=True)})
        return _Outcome("done", self._managed(change, fields, "active", adopted=change.adopted), after=fields)

    def _do_suspend(self, change: Change) -> _Outcome:
        before = dict(change.before or {})
        metadata = {**(before.get("metadata") or {}), "scim_active": False}
        metadata.setdefault("syncd", marker(change.source or "", change.external_id or ""))
        self.client.update_user({"user_id": change.user_id, "metadata": metadata})
        keys = [key for key in self.client.list_keys(change.user_id) if not key.get("blocked")]
        to_block = tuple(dict.fromkeys([*change.blocked_keys, *(str(k["token"]) for k in keys)]))
        applied = {**before, "metadata": metadata}
        # record the keys before blocking them: an interruption now resumes with exactly these
        self.store.save_managed(self._managed(change, applied, "suspending", adopted=change.adopted, blocked=to_block))
        for key in to_block:
            self._ignore_missing(self.client.block_key, key)
        when = change.suspended_at if change.suspended_at is not None else self.clock()
        suspended = self._managed(
            change, applied, "suspended", adopted=change.adopted, blocked=to_block, suspended_at=when
        )
        return _Outcome("done", suspended, after={"metadata": metadata, "blocked_keys": list(to_block)})

    def _do_delete(self, change: Change) -> _Outcome:
        self.client.delete_users([change.user_id])
        return _Outcome("done", self._managed(change, {}, "deleted"), after=None)

    @staticmethod
    def _ignore_missing(call: Callable[[str], Any], key: str) -> None:
        try:
            call(key)
        except Exception as exc:
            if getattr(exc, "status", None) != 404:  # a key deleted since: nothing left to (un)block
                raise

    @staticmethod
    def _managed(
        change: Change,
        applied: Mapping[str, Any],
        state: str,
        *,
        adopted: bool = False,
        blocked: tuple[str, ...] = (),
        suspended_at: float | None = None,
    ) -> ManagedUser:
        return ManagedUser(
            user_id=change.user_id,
            source=change.source or "",
            external_id=change.external_id or "",
            state=state,
            applied=dict(applied),
            blocked_keys=blocked,
            suspended_at=suspended_at,
            adopted=adopted,
        )


def _conflict(change: Change, kind: str, reason: str, other: str | None = None) -> KnownConflict:
    digest = change.inputs_digest
    return KnownConflict(change.user_id, change.source or "", change.external_id or "", kind, reason, other, digest)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    text = str(exc) or type(exc).__name__
    return f"{status}: {text}" if status else text
