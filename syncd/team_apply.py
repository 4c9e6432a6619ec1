"""Apply a team plan to LiteLLM: exactly its changes, each one journaled and, once done, audited.

Teams first (create, update, adopt), then memberships, each phase with bounded concurrency. Every change is journaled
as pending before anything is sent (`changes.key = "team:<alias>"`); before memberships are added, the team's record
already lists them, so an interrupted run can only leave a record that names a member LiteLLM lacks, which the next
plan re-adds or forgets. LiteLLM's team answers are handled here: "already in team" is done, a taken team_id falls
back to one LiteLLM chooses (or to syncd's own team from an interrupted run), "not found in team" on removal is
done, and the Enterprise-only team admin role is a clear error unless `admin_fallback_to_user` adds a plain member.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from syncd.litellm import AlreadyMemberError, EnterpriseFeatureError, NotFoundError, NotMemberError
from syncd.store.state import AuditEntry, Completion
from syncd.store.teams import TeamStore, team_key
from syncd.team_plan import TEAM_LEVEL, ManagedTeam, TeamChange, TeamPlan, alias_key

__all__ = ["ADMIN_NEEDS_ENTERPRISE", "TeamApplier", "TeamApplyResult", "TeamClient"]

log = logging.getLogger(__name__)

_FLUSH_EVERY = 200
ADMIN_NEEDS_ENTERPRISE = (
    "LiteLLM refused the team admin role (an Enterprise feature); set admin_fallback_to_user: true on this team "
    "in teams: to add team admins as plain members"
)


class TeamClient(Protocol):
    """The LiteLLM client methods team changes use (syncd.litellm.LiteLLMClient)."""

    def list_teams(self) -> list[dict[str, Any]]: ...
    def new_team(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def update_team(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def team_info(self, team_id: str) -> dict[str, Any] | None: ...
    def team_member_add(
        self, team_id: str, user_id: str, *, role: str = "user", max_budget_in_team: float | None = None
    ) -> dict[str, Any]: ...
    def team_member_delete(self, team_id: str, user_id: str) -> None: ...
    def team_member_update(
        self, team_id: str, user_id: str, *, role: str | None = None, max_budget_in_team: float | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str  # done | failed | skipped
    error: str | None = None
    team_id: str | None = None  # create_team: the id LiteLLM holds the team under
    note: str | None = None  # how LiteLLM's answer was read, for the audit log


@dataclass(slots=True)
class TeamApplyResult:
    """What applying one team plan did."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    by_action: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str | None, str, str]] = field(default_factory=list)  # (alias, user_id, action, error)

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
            "errors": [{"team": a, "user_id": u, "action": c, "error": e} for a, u, c, e in self.errors],
        }


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{status}: {text}" if status else text


class TeamApplier:
    """Runs team plans against LiteLLM for one sync run."""

    def __init__(
        self,
        client: TeamClient,
        store: TeamStore,
        *,
        run_id: int,
        concurrency: int = 8,
        on_outcome: Callable[[TeamChange, str], None] | None = None,
    ) -> None:
        self.client, self.store, self.run_id = client, store, run_id
        self.concurrency, self.on_outcome = concurrency, on_outcome

    def apply(self, plan: TeamPlan) -> TeamApplyResult:
        """Apply every change of the team plan: teams first, then memberships."""
        result = TeamApplyResult()
        if plan.empty:
            return result
        ids = self.store.journal(self.run_id, [change.to_dict() for change in plan.changes])
        work = list(zip(ids, plan.changes, strict=True))
        team_ids, lost = self._teams([w for w in work if w[1].action in TEAM_LEVEL], result)
        records = {key: replace(r, team_id=team_ids.get(key, r.team_id)) for key, r in plan.records.items()}
        records = {key: record for key, record in records.items() if key not in lost}
        members = [w for w in work if w[1].action not in TEAM_LEVEL]
        self._skip([w for w in members if w[1].key in lost], result)
        members = [(i, replace(c, team_id=team_ids.get(c.key, c.team_id))) for i, c in members if c.key not in lost]
        self.store.save_teams(self._before_members(records, members))
        done = self._run(members, result)
        self.store.save_teams(self._after_members(records, done))
        return result

    # -- phases --------------------------------------------------------------------------------------------------
    def _teams(self, work: list[tuple[int, TeamChange]], result: TeamApplyResult) -> tuple[dict[str, str], set[str]]:
        """Create, update and adopt teams; answers the team ids created and the aliases whose team is missing."""
        team_ids: dict[str, str] = {}
        lost: set[str] = set()
        for change, outcome in self._run(work, result):
            if change.action == "conflict" or (change.action == "create_team" and outcome.status != "done"):
                lost.add(change.key)
            elif outcome.team_id:
                team_ids[change.key] = outcome.team_id
        return team_ids, lost

    @staticmethod
    def _before_members(
        records: Mapping[str, ManagedTeam], work: Sequence[tuple[int, TeamChange]]
    ) -> list[ManagedTeam]:
        # the record names a member before member_add is sent: an interruption never loses who syncd added
        adding: dict[str, set[str]] = {}
        for _, change in work:
            if change.action == "add_member" and change.user_id:
                adding.setdefault(change.key, set()).add(change.user_id)
        return [replace(r, members=r.members | adding.get(key, set())) for key, r in records.items()]

    @staticmethod
    def _after_members(
        records: Mapping[str, ManagedTeam], done: Iterable[tuple[TeamChange, _Outcome]]
    ) -> list[ManagedTeam]:
        members = {key: set(record.members) for key, record in records.items()}
        for change, outcome in done:
            if outcome.status != "done" or change.user_id is None or change.key not in members:
                continue
            if change.action == "add_member":
                members[change.key].add(change.user_id)
            elif change.action in ("remove_member", "forget_member"):
                members[change.key].discard(change.user_id)
        return [replace(record, members=frozenset(members[key])) for key, record in records.items()]

    def _skip(self, work: Sequence[tuple[int, TeamChange]], result: TeamApplyResult) -> None:
        outcome = _Outcome("skipped", error="the team could not be created or found")
        self._complete([(journal_id, change, outcome) for journal_id, change in work], result)

    def _run(
        self, work: Sequence[tuple[int, TeamChange]], result: TeamApplyResult
    ) -> list[tuple[TeamChange, _Outcome]]:
        """Execute changes on `concurrency` threads, completing them in the journal in batches as they finish."""
        finished: list[tuple[TeamChange, _Outcome]] = []
        batch: list[tuple[int, TeamChange, _Outcome]] = []
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="team-apply") as pool:
            try:
                for (journal_id, change), outcome in zip(
                    work, pool.map(self._execute, [c for _, c in work]), strict=True
                ):
                    batch.append((journal_id, change, outcome))
                    finished.append((change, outcome))
                    if len(batch) >= _FLUSH_EVERY:
                        self._complete(batch, result)
                        batch = []
            except BaseException:
                # interrupted (a signal, a crash): finish the calls in flight, send no more; the rest stays pending
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            finally:
                self._complete(batch, result)
        return finished

    def _complete(self, batch: Sequence[tuple[int, TeamChange, _Outcome]], result: TeamApplyResult) -> None:
        self.store.complete([self._completion(j, c, o) for j, c, o in batch], run_id=self.run_id)
        for _, change, outcome in batch:
            self._count(change, outcome, result)

    @staticmethod
    def _completion(journal_id: int, change: TeamChange, outcome: _Outcome) -> Completion:
        audit = None
        if outcome.status == "done":
            after: dict[str, Any] = dict(change.payload or {})
            if change.user_id is not None:
                after.update(user_id=change.user_id, role=change.role, max_budget_in_team=change.max_budget_in_team)
            if outcome.team_id:
                after["team_id"] = outcome.team_id
            reason = f"{change.reason} ({outcome.note})" if outcome.note else change.reason
            audit = AuditEntry("syncd", change.action, team_key(change.alias), change.before, after, reason)
        return Completion(journal_id, outcome.status, outcome.error, None, audit)

    def _count(self, change: TeamChange, outcome: _Outcome, result: TeamApplyResult) -> None:
        if outcome.status == "done":
            result.done += 1
            result.by_action[change.action] = result.by_action.get(change.action, 0) + 1
        elif outcome.status == "failed":
            result.failed += 1
            result.errors.append((change.alias, change.user_id, change.action, outcome.error or "failed"))
            log.warning(
                "team change failed",
                extra={
                    "team": change.alias,
                    "user_id": change.user_id,
                    "action": change.action,
                    "error": outcome.error,
                },
            )
        else:
            result.skipped += 1
        if self.on_outcome is not None:
            self.on_outcome(change, outcome.status)

    # -- one change (worker thread) -------------------------------------------------------------------------------
    def _execute(self, change: TeamChange) -> _Outcome:
        try:
            handler: Callable[[TeamChange], _Outcome] = getattr(self, f"_do_{change.action}")
            return handler(change)
        except Exception as exc:
            return _Outcome("failed", error=_describe(exc))

    def _do_conflict(self, change: TeamChange) -> _Outcome:
        return _Outcome("skipped", error=change.reason)

    def _do_adopt_team(self, change: TeamChange) -> _Outcome:
        return _Outcome("done", team_id=change.team_id)

    def _do_forget_member(self, change: TeamChange) -> _Outcome:
        return _Outcome("done")

    def _do_create_team(self, change: TeamChange) -> _Outcome:
        payload = dict(change.payload or {})
        try:
            answer = self.client.new_team(payload)
        except Exception as exc:
            if getattr(exc, "status", None) != 400 or "already exists" not in str(exc).lower():
                raise
            return self._team_id_taken(change, payload)
        return _Outcome("done", team_id=str(answer.get("team_id") or payload["team_id"]))

    def _team_id_taken(self, change: TeamChange, payload: dict[str, Any]) -> _Outcome:
        """A 400 for a duplicate team_id: syncd's own team from an interrupted run, or someone else's id."""
        taken = str(payload.pop("team_id"))
        team = (self.client.team_info(taken) or {}).get("team_info") or {}
        marker = (team.get("metadata") or {}).get("syncd")
        if isinstance(marker, dict) and marker.get("managed") and alias_key(team.get("team_alias") or "") == change.key:
            return _Outcome("done", team_id=taken, note="created by an interrupted run")
        answer = self.client.new_team(payload)
        return _Outcome("done", team_id=str(answer["team_id"]), note=f"team_id {taken} is taken: LiteLLM chose one")

    def _do_update_team(self, change: TeamChange) -> _Outcome:
        self.client.update_team(dict(change.payload or {}))
        return _Outcome("done")

    def _do_add_member(self, change: TeamChange) -> _Outcome:
        assert change.team_id is not None and change.user_id is not None
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
        # LiteLLM's 400 for an existing member: what was asked for holds
        with contextlib.suppress(AlreadyMemberError):
            self.client.team_member_add(
                change.team_id, change.user_id, role=role, max_budget_in_team=change.max_budget_in_team
            )

    def _do_update_member(self, change: TeamChange) -> _Outcome:
        assert change.team_id is not None and change.user_id is not None
        try:
            self.client.team_member_update(change.team_id, change.user_id, max_budget_in_team=change.max_budget_in_team)
        except NotMemberError:
            return _Outcome("skipped", error="no longer a member")
        return _Outcome("done")

    def _do_remove_member(self, change: TeamChange) -> _Outcome:
        assert change.team_id is not None and change.user_id is not None
        try:
            self.client.team_member_delete(change.team_id, change.user_id)
        except (NotMemberError, NotFoundError):
            return _Outcome("done", note="already gone")
        return _Outcome("done")
