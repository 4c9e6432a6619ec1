"""Apply a plan to LiteLLM: exactly its changes, in the order their dependencies ask, each one journaled.

One applier for every change of a `Plan` (users, keys, teams, memberships): one dispatch table on `Action`, one
journal, one bounded thread pool. Every change is written to the journal as pending before anything is sent; its
outcome (done, failed with the LiteLLM error, skipped) is written with the managed-user record and the audit entry
in one transaction. A change runs once every change it depends on is done (a membership after the create of its
user and of its team), and is skipped when one of them is not. Nothing here re-diffs, reads LiteLLM or the config:
what to do with an existing user or team was decided by the plan; a write LiteLLM refuses as it is (400, 422, a
409 on an update) is a conflict, stored so that it is not retried as it is; a 409 on a create means LiteLLM
changed since the plan read it, so the change fails and the next plan decides. A crash or an outage leaves the
store saying exactly what was applied, and the next reconcile converges from there.

A suspension leaves its user `suspending` until its block_keys change has blocked the user's keys: that change reads
the keys LiteLLM shows unblocked when it runs (a key made after the plan is blocked too) and records them before
blocking them, so an interrupted suspension resumes with the same keys, and a reactivation unblocks exactly those.
A team's record lists a member before member_add is sent, so an interruption never loses who syncd added.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from syncd.fields import marker
from syncd.litellm import AlreadyMemberError, EnterpriseFeatureError, LiteLLM, NotFoundError, NotMemberError
from syncd.model import KnownConflict, ManagedTeam, ManagedUser
from syncd.plan import Action, AnyChange, Change, Plan, TeamChange
from syncd.store.repository import AuditEntry, Completion, SyncStore

__all__ = ["ADMIN_NEEDS_ENTERPRISE", "Applier", "ApplyResult", "ApplyStopped", "PlanHeld"]

log = logging.getLogger(__name__)

_LIMITS = ("tpm_limit", "rpm_limit", "max_budget", "budget_duration")
#: answers to a user write that the same request will always get again: a conflict, not a failure to retry
_REFUSALS = (400, 409, 422)
_WRITES = (Action.CREATE, Action.ADOPT, Action.UPDATE, Action.REACTIVATE)
ADMIN_NEEDS_ENTERPRISE = (
    "LiteLLM refused the team admin role (an Enterprise feature); set admin_fallback_to_user: true on this team "
    "in teams: to add team admins as plain members"
)


class PlanHeld(Exception):
    """A held plan (deactivation guard) was handed to apply."""


class ApplyStopped(Exception):
    """Apply stopped taking new changes (the process is stopping); those in flight were finished and journaled."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str  # done | failed | skipped
    managed: ManagedUser | None = None
    error: str | None = None
    after: Mapping[str, Any] | None = None
    conflict: KnownConflict | None = None  # what LiteLLM refused, stored so that it is not retried as it is
    note: str | None = None  # how LiteLLM's answer was read, for the audit log


@dataclass(slots=True)
class ApplyResult:
    """What applying one plan did."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    by_action: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # (what: user_id or "team ALIAS [user_id]", action, message)
    #: changes LiteLLM refused in a way retrying cannot fix (skipped, not failed)
    conflicts: list[KnownConflict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no change failed."""
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "by_action": dict(self.by_action),
            "errors": [{"what": what, "action": action, "error": error} for what, action, error in self.errors],
        }


def _payload(fields: Mapping[str, Any], names: Iterable[str], *, clear: bool) -> dict[str, Any]:
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


def _suspended_fields(change: Change) -> dict[str, Any]:
    """What a suspension leaves in LiteLLM: the fields before it, with metadata.scim_active false (and the marker)."""
    before = dict(change.before or {})
    metadata = {**(before.get("metadata") or {}), "scim_active": False}
    metadata.setdefault("syncd", marker(change.source or "", change.external_id or ""))
    return {**before, "metadata": metadata}


_Running = dict[Future[_Outcome], tuple[int, AnyChange]]


class Applier:
    """Runs plans against LiteLLM for one sync run."""

    def __init__(
        self,
        client: LiteLLM,
        store: SyncStore,
        *,
        run_id: int,
        concurrency: int = 8,
        on_outcome: Callable[[AnyChange, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.client, self.store, self.run_id = client, store, run_id
        self.concurrency, self.on_outcome, self.clock, self.should_stop = concurrency, on_outcome, clock, should_stop
        self._dispatch: dict[Action, Callable[[Any], _Outcome]] = {
            Action.CREATE: self._create,
            Action.ADOPT: self._write_whole,
            Action.REACTIVATE: self._write_whole,
            Action.UPDATE: self._update,
            Action.SUSPEND: self._suspend,
            Action.DELETE: self._delete,
            Action.CONFLICT: self._skip_conflict,
            Action.BLOCK_KEYS: self._block_keys,
            Action.UNBLOCK_KEYS: self._unblock_keys,
            Action.CREATE_TEAM: self._create_team,
            Action.ADOPT_TEAM: self._nothing_to_send,
            Action.UPDATE_TEAM: self._update_team,
            Action.TEAM_CONFLICT: self._skip_conflict,
            Action.ADD_MEMBER: self._add_member,
            Action.UPDATE_MEMBER: self._update_member,
            Action.REMOVE_MEMBER: self._remove_member,
            Action.FORGET_MEMBER: self._nothing_to_send,
        }

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change of the plan, each after the changes it depends on; raise PlanHeld for a held plan."""
        if plan.held:
            raise PlanHeld(plan.held)
        result = ApplyResult()
        steps = list(plan.steps)
        if not steps:
            return result
        ids = self.store.journal(self.run_id, [c.to_dict() for c in steps], keys=[c.journal_key for c in steps])
        teams = _TeamBook(plan)
        self.store.save_teams(teams.records_before_members())
        _Schedule(self, list(zip(ids, steps, strict=True)), result, teams).run()
        self.store.save_teams(teams.records_after())
        return result

    # -- one change (worker thread) -------------------------------------------------------------------------------
    def execute(self, change: AnyChange) -> _Outcome:
        """Send one change to LiteLLM; answer its outcome (never raises for a LiteLLM error)."""
        try:
            return self._dispatch[change.action](change)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if isinstance(change, Change) and change.action in _WRITES and status in _REFUSALS:
                if change.action == Action.CREATE and status == 409:
                    return _Outcome(
                        "failed",
                        error=f"{_describe(exc)} (LiteLLM changed since the plan read it; the next plan decides)",
                    )
                reason = f"LiteLLM refused the {change.action}: {_describe(exc)}"
                return _Outcome("skipped", error=reason, conflict=_conflict(change, "refused", reason))
            return _Outcome("failed", error=_describe(exc))

    def _skip_conflict(self, change: AnyChange) -> _Outcome:
        return _Outcome("skipped", error=change.reason)

    def _nothing_to_send(self, change: AnyChange) -> _Outcome:
        return _Outcome("done")

    def _create(self, change: Change) -> _Outcome:
        fields = dict(change.after or {})
        body = {
            "user_id": change.user_id,
            **_payload(fields, fields, clear=False),
            "auto_create_key": change.auto_create_key,
        }
        self.client.new_user(body)
        return _Outcome("done", self._managed(change, fields, "active"), after=fields)

    def _write_whole(self, change: Change) -> _Outcome:
        """Adopt or reactivate: every field written (metadata whole, with what others put there)."""
        fields = dict(change.after or {})
        self.client.update_user({"user_id": change.user_id, **_payload(fields, fields, clear=True)})
        return _Outcome("done", self._managed(change, fields, "active", adopted=change.adopted), after=fields)

    def _update(self, change: Change) -> _Outcome:
        fields = dict(change.after or {})
        names = [diff.field for diff in change.diffs if diff.field != "metadata"]
        body = {"user_id": change.user_id, **_payload(fields, names, clear=True), "metadata": fields["metadata"]}
        self.client.update_user(body)
        return _Outcome("done", self._managed(change, fields, "active", adopted=change.adopted), after=fields)

    def _suspend(self, change: Change) -> _Outcome:
        applied = _suspended_fields(change)
        self.client.update_user({"user_id": change.user_id, "metadata": applied["metadata"]})
        # suspending until its block_keys change is done: an interruption now resumes with the keys recorded
        record = self._managed(change, applied, "suspending", adopted=change.adopted, blocked=change.blocked_keys)
        return _Outcome("done", record, after={"metadata": applied["metadata"]})

    def _block_keys(self, change: Change) -> _Outcome:
        """Block the keys syncd blocked before and every key LiteLLM shows unblocked now, recorded before blocked."""
        shown = [key.token for key in self.client.read_keys(change.user_id) if not key.blocked]
        keys = tuple(dict.fromkeys((*change.blocked_keys, *shown)))
        applied = _suspended_fields(change)
        if keys != change.blocked_keys:
            blocking = self._managed(change, applied, "suspending", adopted=change.adopted, blocked=keys)
            self.store.save_managed(blocking)
        for key in keys:
            self._ignore_missing(self.client.block_key, key)
        record = self._suspended(replace(change, blocked_keys=keys), applied)
        return _Outcome("done", record, after={"blocked_keys": list(keys)})

    def _unblock_keys(self, change: Change) -> _Outcome:
        """Unblock the keys syncd blocked; the record then holds none, so that a reactivation that fails after this
        is planned again without unblocking them a second time."""
        for key in change.blocked_keys:
            self._ignore_missing(self.client.unblock_key, key)
        record = self.store.load_managed([change.user_id]).get(change.user_id)
        unblocked = None if record is None else replace(record, blocked_keys=())
        return _Outcome("done", unblocked, after={"unblocked_keys": list(change.blocked_keys)})

    def _delete(self, change: Change) -> _Outcome:
        self.client.delete_users([change.user_id])
        return _Outcome("done", self._managed(change, {}, "deleted"), after=None)

    def _suspended(self, change: Change, applied: Mapping[str, Any]) -> ManagedUser:
        when = change.suspended_at if change.suspended_at is not None else self.clock()
        return self._managed(
            change, applied, "suspended", adopted=change.adopted, blocked=change.blocked_keys, suspended_at=when
        )

    @staticmethod
    def _ignore_missing(call: Callable[[str], object], key: str) -> None:
        with contextlib.suppress(NotFoundError):  # a key deleted since: nothing left to (un)block
            call(key)

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

    # -- teams and memberships -----------------------------------------------------------------------------------
    def _create_team(self, change: TeamChange) -> _Outcome:
        self.client.new_team(dict(change.payload or {}))
        return _Outcome("done")

    def _update_team(self, change: TeamChange) -> _Outcome:
        self.client.update_team(dict(change.payload or {}))
        return _Outcome("done")

    def _add_member(self, change: TeamChange) -> _Outcome:
        try:
            self._member_add(change, change.role or "user")
        except EnterpriseFeatureError:
            if change.role != "admin":
                raise
            if not change.admin_fallback:
                return _Outcome("failed", error=ADMIN_NEEDS_ENTERPRISE)
            self._member_add(change, "user")
            return _Outcome("done", note="added as user: team admins need LiteLLM Enterprise (admin_fallback_to_user)")
        return _Outcome("done")

    def _member_add(self, change: TeamChange, role: str) -> None:
        assert change.team_id is not None and change.user_id is not None
        with contextlib.suppress(AlreadyMemberError):  # LiteLLM's 400 for an existing member: what was asked holds
            self.client.team_member_add(
                change.team_id, change.user_id, role=role, max_budget_in_team=change.max_budget_in_team
            )

    def _update_member(self, change: TeamChange) -> _Outcome:
        assert change.team_id is not None and change.user_id is not None
        try:
            self.client.team_member_update(change.team_id, change.user_id, max_budget_in_team=change.max_budget_in_team)
        except NotMemberError:
            return _Outcome("skipped", error="no longer a member")
        return _Outcome("done")

    def _remove_member(self, change: TeamChange) -> _Outcome:
        assert change.team_id is not None and change.user_id is not None
        try:
            self.client.team_member_delete(change.team_id, change.user_id)
        except (NotMemberError, NotFoundError):
            return _Outcome("done", note="already gone")
        return _Outcome("done")

    # -- recording (calling thread) -------------------------------------------------------------------------------
    def record(self, batch: list[tuple[int, AnyChange, _Outcome]], result: ApplyResult) -> None:
        """Write what finished together in one transaction, then count it."""
        completions = [
            Completion(journal_id, outcome.status, outcome.error, outcome.managed, _audit(change, outcome))
            for journal_id, change, outcome in batch
        ]
        self.store.complete_changes(completions, run_id=self.run_id)
        for _, change, outcome in batch:
            self._count(change, outcome, result)

    def _count(self, change: AnyChange, outcome: _Outcome, result: ApplyResult) -> None:
        what = change.user_id if isinstance(change, Change) else f"team {change.alias} {change.user_id or ''}".strip()
        if outcome.status == "done":
            result.done += 1
            result.by_action[change.action] = result.by_action.get(change.action, 0) + 1
        elif outcome.status == "failed":
            result.failed += 1
            result.errors.append((what, str(change.action), outcome.error or "failed"))
            log.warning("change failed", extra={"key": what, "action": str(change.action), "error": outcome.error})
        else:
            result.skipped += 1
            if outcome.conflict is not None:
                result.conflicts.append(outcome.conflict)
                log.warning("change refused: a conflict", extra={"key": what, "error": outcome.error})
        if self.on_outcome is not None:
            self.on_outcome(change, outcome.status)


class _Schedule:
    """Runs the changes on a bounded pool, each once its dependencies are done; records what finishes in batches."""

    def __init__(
        self, applier: Applier, work: list[tuple[int, AnyChange]], result: ApplyResult, teams: _TeamBook
    ) -> None:
        self.applier, self.result, self.teams = applier, result, teams
        self.waiting = work
        #: refs with changes not finished yet, and refs with a change that did not end done
        self.outstanding = Counter(change.ref for _, change in work)
        self.broken: set[str] = set()

    def run(self) -> None:
        limit = self.applier.concurrency
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="apply") as pool:
            running: _Running = {}
            try:
                while self.waiting or running:
                    self._submit(pool, running, limit * 2)
                    if running:
                        self._collect(running)
            except BaseException:
                for future in running:
                    future.cancel()
                self._drain(running)
                raise

    def _submit(self, pool: ThreadPoolExecutor, running: _Running, room: int) -> None:
        later: list[tuple[int, AnyChange]] = []
        skipped: list[tuple[int, AnyChange, _Outcome]] = []
        for journal_id, change in self.waiting:
            deps = change.depends_on
            if any(ref in self.broken for ref in deps):
                skipped.append((journal_id, change, _Outcome("skipped", error=f"depends on {deps}, not applied")))
            elif len(running) >= room or any(self.outstanding[ref] for ref in deps):
                later.append((journal_id, change))
            else:
                stop = self.applier.should_stop
                if stop is not None and stop():
                    raise ApplyStopped("stopped taking new changes")
                running[pool.submit(self.applier.execute, change)] = (journal_id, change)
        self.waiting = later
        if skipped:
            self._finish(skipped)
            if self.waiting and not running:
                self._submit(pool, running, room)

    def _collect(self, running: _Running) -> None:
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        batch, crash = [], None
        for future in finished:
            journal_id, change = running.pop(future)
            try:
                outcome = future.result()
            except BaseException as exc:  # a worker interrupted: recorded, then raised once the batch is written
                crash = crash or exc
                outcome = _Outcome("failed", error=f"interrupted: {exc!r}")
            batch.append((journal_id, change, outcome))
        self._finish(batch)
        if crash is not None:
            raise crash

    def _drain(self, running: _Running) -> None:
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
        self._finish(batch)

    def _finish(self, batch: list[tuple[int, AnyChange, _Outcome]]) -> None:
        self.applier.record(batch, self.result)
        for _, change, outcome in batch:
            self.outstanding[change.ref] -= 1
            if outcome.status != "done":
                self.broken.add(change.ref)
            self.teams.finished(change, outcome)
        self.applier.store.save_teams(self.teams.created_now())


class _TeamBook:
    """The records of the plan's teams as apply goes: members listed before they are added, the outcome after."""

    def __init__(self, plan: Plan) -> None:
        self.records = dict(plan.team_records)
        self.created = {c.key for c in plan.teams if c.action == Action.CREATE_TEAM}
        self.adding: dict[str, set[str]] = {}
        for change in plan.teams:
            if change.action == Action.ADD_MEMBER and change.user_id:
                self.adding.setdefault(change.key, set()).add(change.user_id)
        self.members = {key: set(record.members) for key, record in self.records.items()}
        self.lost: set[str] = set()
        self.fresh: list[ManagedTeam] = []

    def _listed(self, key: str) -> ManagedTeam:
        record = self.records[key]
        return replace(record, members=record.members | self.adding.get(key, set()))

    def records_before_members(self) -> list[ManagedTeam]:
        """The records of teams that exist, naming the members about to be added (teams created: once created)."""
        return [self._listed(key) for key in self.records if key not in self.created]

    def finished(self, change: AnyChange, outcome: _Outcome) -> None:
        if not isinstance(change, TeamChange) or change.key not in self.records:
            return
        if change.action == Action.CREATE_TEAM:
            if outcome.status == "done":
                self.fresh.append(self._listed(change.key))
            else:
                self.lost.add(change.key)
        elif outcome.status == "done" and change.user_id is not None:
            if change.action == Action.ADD_MEMBER:
                self.members[change.key].add(change.user_id)
            elif change.action in (Action.REMOVE_MEMBER, Action.FORGET_MEMBER):
                self.members[change.key].discard(change.user_id)

    def created_now(self) -> list[ManagedTeam]:
        """The records of teams created since last asked (saved before their members are added)."""
        fresh, self.fresh = self.fresh, []
        return fresh

    def records_after(self) -> list[ManagedTeam]:
        """Every record with the members syncd put there now (a team that could not be created is not recorded)."""
        return [
            replace(record, members=frozenset(self.members[key]))
            for key, record in self.records.items()
            if key not in self.lost
        ]


def _audit(change: AnyChange, outcome: _Outcome) -> AuditEntry | None:
    if outcome.status != "done":
        return None
    reason = f"{change.reason} ({outcome.note})" if outcome.note else change.reason
    if isinstance(change, Change):
        actor = change.source or "syncd"
        return AuditEntry(actor, str(change.action), change.user_id, change.before, outcome.after, reason)
    after: dict[str, Any] = dict(change.payload or {})
    if change.user_id is not None:
        after.update(user_id=change.user_id, role=change.role, max_budget_in_team=change.max_budget_in_team)
    if change.team_id:
        after["team_id"] = change.team_id
    return AuditEntry("syncd", str(change.action), change.journal_key, change.before, after, reason)


def _conflict(change: Change, kind: str, reason: str, other: str | None = None) -> KnownConflict:
    digest = change.inputs_digest
    return KnownConflict(change.user_id, change.source or "", change.external_id or "", kind, reason, other, digest)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{status}: {text}" if status else text
