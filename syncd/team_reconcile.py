"""The team step of a reconcile run: plan the teams against LiteLLM's /team/list, then journal, apply and audit.

`TeamReconciler(settings, store, client).run(desired_users, managed_users, run_id, dry_run=...)` runs after the
user changes are applied (users must exist before they join a team). It reads LiteLLM once (`/team/list`), and not
at all when no team is configured, named by a mapping, made from SCIM groups or recorded; a run with nothing to
change writes nothing, to LiteLLM or to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from syncd.model import DesiredUser, ManagedUser
from syncd.store.teams import TeamStore
from syncd.team_apply import TeamApplier, TeamApplyResult, TeamClient
from syncd.team_plan import TeamChange, TeamPlan, render_team_json
from syncd.teams import plan_teams, team_groups_of

__all__ = ["TeamReconciler", "TeamReport", "users_brought_in"]


def users_brought_in(user_plan: Any) -> list[str]:
    """The user_ids a user plan creates, adopts or reactivates: a dry run's team preview counts them as existing."""
    return [c.user_id for c in user_plan.changes if c.action in ("create", "adopt", "reactivate")]


@dataclass(slots=True)
class TeamReport:
    """What the team step of one run did."""

    plan: TeamPlan
    status: str  # success | failed | dry_run | nothing (no team configured: LiteLLM not read)
    applied: TeamApplyResult | None = None
    litellm_reads: int = 0

    @property
    def ok(self) -> bool:
        """True unless a team change failed."""
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "status": self.status,
            "litellm_reads": self.litellm_reads,
            "plan": render_team_json(self.plan),
            "applied": self.applied.to_dict() if self.applied is not None else None,
        }


class TeamReconciler:
    """The team step of a reconcile: run it after the user changes are applied, so that members exist."""

    def __init__(
        self,
        settings: Any,
        store: Any,
        client: TeamClient,
        *,
        on_outcome: Callable[[TeamChange, str], None] | None = None,
    ) -> None:
        self.settings, self.client, self.on_outcome = settings, client, on_outcome
        self.teams = TeamStore(store.engine)

    def plan(
        self,
        desired_users: Mapping[str, DesiredUser],
        managed_users: Mapping[str, ManagedUser] | None = None,
        *,
        pending_users: Collection[str] = (),
        only: Collection[str] | None = None,
        held: Collection[str] = (),
    ) -> tuple[TeamPlan, int]:
        """The team plan (one /team/list read, none when no team is configured or recorded) and the reads made.

        `only`: a run for these users (desired_users holds just them); everyone else's memberships stand.
        """
        records = self.teams.load_teams()
        scim = self._scim_teams(desired_users)
        if not (records or scim or self.settings.teams or any(u.teams for u in desired_users.values())):
            return TeamPlan(), 0
        current = self.client.list_teams()
        plan = plan_teams(
            desired_users,
            self.settings.teams,
            current,
            records,
            self.teams.user_states() if managed_users is None else managed_users,
            suspended_leave_teams=self.settings.policy.suspended_leave_teams,
            groups_as_teams=scim,
            pending_users=pending_users,
            team_groups=team_groups_of(self.settings.mappings),
            only=only,
            held=held,
        )
        return plan, 1

    def run(
        self,
        desired_users: Mapping[str, DesiredUser],
        managed_users: Mapping[str, ManagedUser] | None,
        run_id: int | None,
        *,
        dry_run: bool = False,
        pending_users: Collection[str] = (),
        only: Collection[str] | None = None,
        held: Collection[str] = (),
    ) -> TeamReport:
        """Plan the teams against LiteLLM and, unless dry_run, apply the plan (journaled under run_id)."""
        plan, reads = self.plan(desired_users, managed_users, pending_users=pending_users, only=only, held=held)
        if reads == 0:
            return TeamReport(plan, "nothing")
        if dry_run or run_id is None:
            return TeamReport(plan, "dry_run", litellm_reads=reads)
        applier = TeamApplier(
            self.client,
            self.teams,
            run_id=run_id,
            concurrency=self.settings.litellm.concurrency,
            on_outcome=self.on_outcome,
        )
        applied = applier.apply(plan)
        return TeamReport(plan, "success" if applied.ok else "failed", applied, reads)

    def _scim_teams(self, desired_users: Mapping[str, DesiredUser]) -> dict[str, list[str]]:
        """user_id -> the SCIM group names that become teams (scim.groups_as_teams), matched by user_id or email."""
        scim = self.settings.scim
        if not scim.groups_as_teams:
            return {}
        by_email = {user.email.lower(): user.user_id for user in desired_users.values() if user.email}
        teams: dict[str, list[str]] = {}
        for member in self.teams.scim_team_members([token.name for token in scim.tokens]):
            user_id = member.user_id if member.user_id in desired_users else by_email.get(member.email_lower)
            if user_id is not None:
                teams.setdefault(user_id, []).append(member.group)
        return teams
