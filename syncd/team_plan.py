"""The team plan as data: what LiteLLM holds (CurrentTeam), what syncd recorded (ManagedTeam), the changes
(TeamChange, TeamPlan), and how a plan is printed. Plain data, no I/O: the planner (syncd.teams) builds it, the team
applier (syncd.team_apply) executes it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from syncd.plan import FieldDiff, short_value

__all__ = [
    "MARKER",
    "SETTING_FIELDS",
    "TEAM_ACTIONS",
    "TEAM_LEVEL",
    "CurrentTeam",
    "ManagedTeam",
    "TeamChange",
    "TeamPlan",
    "TeamSpec",
    "alias_key",
    "current_team",
    "render_team_json",
    "render_team_text",
    "team_id_for",
]

#: syncd's mark on the LiteLLM teams it manages (metadata.syncd)
MARKER: Mapping[str, Any] = {"managed": True}
#: the team settings syncd keeps in step on its own teams
SETTING_FIELDS = ("models", "max_budget", "budget_duration", "tpm_limit", "rpm_limit")
TEAM_ACTIONS = (
    "create_team",
    "adopt_team",
    "update_team",
    "add_member",
    "update_member",
    "remove_member",
    "forget_member",
    "conflict",
)
#: actions on a team itself, applied before its members'
TEAM_LEVEL = ("create_team", "adopt_team", "update_team", "conflict")
_SLUG = re.compile(r"[^a-z0-9]+")


class TeamSpec(Protocol):
    """What the planner reads of a `teams:` entry (syncd.settings.TeamSettings satisfies it)."""

    alias: str
    models: list[str] | None
    max_budget: float | None
    budget_duration: str | None
    tpm_limit: int | None
    rpm_limit: int | None
    team_member_budget: float | None
    admin_groups: list[str]
    admin_fallback_to_user: bool


@dataclass(frozen=True, slots=True)
class ManagedTeam:
    """The store's record of a team syncd uses: its id, whether syncd manages it, and the members syncd put there."""

    alias: str  # alias_key(): the record's key
    team_id: str
    managed: bool  # False: a team syncd only joins and leaves
    applied: Mapping[str, Any] = field(default_factory=dict)
    members: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CurrentTeam:
    """A team as LiteLLM's /team/list shows it."""

    team_id: str
    alias: str | None
    fields: Mapping[str, Any]
    metadata: Mapping[str, Any]
    members: Mapping[str, str]  # user_id -> role
    member_budgets: Mapping[str, float | None]  # user_id -> max_budget_in_team, for members whose budget was shown

    @property
    def managed(self) -> bool:
        """True when the team carries syncd's marker."""
        marker = self.metadata.get("syncd")
        return isinstance(marker, Mapping) and marker.get("managed") is True


@dataclass(frozen=True, slots=True)
class TeamChange:
    """One planned change to one team or one membership."""

    action: str
    alias: str  # as LiteLLM shows it (the config's spelling)
    key: str  # alias_key(alias)
    team_id: str | None
    reason: str
    user_id: str | None = None
    role: str | None = None
    max_budget_in_team: float | None = None
    admin_fallback: bool = False
    managed: bool = True
    diffs: tuple[FieldDiff, ...] = ()
    #: the /team/new or /team/update body
    payload: Mapping[str, Any] | None = None
    before: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON-ready data."""
        data = asdict(self)
        data["diffs"] = [asdict(diff) for diff in self.diffs]
        data["payload"] = dict(self.payload) if self.payload is not None else None
        data["before"] = dict(self.before) if self.before is not None else None
        return data


@dataclass(frozen=True, slots=True)
class TeamPlan:
    """The team changes of one reconcile; `records` holds each changed team's record before its changes."""

    changes: tuple[TeamChange, ...] = ()
    records: Mapping[str, ManagedTeam] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    unchanged: int = 0  # teams with nothing to do
    waiting: int = 0  # memberships of users that do not exist in LiteLLM yet

    def counts(self) -> dict[str, int]:
        """How many changes of each action."""
        counts = dict.fromkeys(TEAM_ACTIONS, 0)
        for change in self.changes:
            counts[change.action] += 1
        return counts

    @property
    def empty(self) -> bool:
        """True when there is nothing to do."""
        return not self.changes


def alias_key(alias: str) -> str:
    """A team alias in the form used for matching and as the record key."""
    return alias.strip().casefold()


def team_id_for(alias: str, attempt: int = 0) -> str:
    """The team_id syncd gives a team it creates: readable, deterministic, with a suffix after a collision."""
    slug = _SLUG.sub("-", alias.strip().lower()).strip("-")[:48] or "team"
    digest = hashlib.sha256(alias_key(alias).encode()).hexdigest()[:8]
    return f"syncd-{slug}-{digest}" + (f"-{attempt}" if attempt else "")


def current_team(data: Mapping[str, Any]) -> CurrentTeam:
    """A /team/list entry as the planner compares it."""
    members = {
        str(m["user_id"]): str(m.get("role") or "user")
        for m in data.get("members_with_roles") or ()
        if isinstance(m, Mapping) and m.get("user_id")
    }
    budgets: dict[str, float | None] = {}
    for membership in data.get("team_memberships") or ():
        table = membership.get("litellm_budget_table")
        if "litellm_budget_table" not in membership or (table is None and membership.get("budget_id")):
            continue  # the budget was not included in the answer: unknown, so never "drifted"
        budgets[str(membership.get("user_id"))] = table.get("max_budget") if isinstance(table, Mapping) else None
    return CurrentTeam(
        team_id=str(data["team_id"]),
        alias=data.get("team_alias"),
        fields={name: data.get(name) for name in ("team_alias", *SETTING_FIELDS)},
        metadata=data.get("metadata") or {},
        members=members,
        member_budgets=budgets,
    )


# -- rendering ------------------------------------------------------------------------------------------------------
_SYMBOL = {
    "create_team": "+",
    "adopt_team": "&",
    "update_team": "~",
    "add_member": "+",
    "update_member": "~",
    "remove_member": "-",
    "forget_member": ".",
    "conflict": "!",
}


def render_team_text(plan: TeamPlan) -> str:
    """The team plan for people: a summary line, then each change with its reason and fields."""
    counts = plan.counts()
    summary = ", ".join(f"{counts[a]} {a}" for a in TEAM_ACTIONS if counts[a]) or "no changes"
    lines = [f"Teams: {summary} ({plan.unchanged} teams unchanged)."]
    lines.extend(f"warning: {problem}" for problem in plan.problems)
    for change in plan.changes:
        who = f" {change.user_id}" if change.user_id else ""
        extra = f" as {change.role}" if change.role == "admin" else ""
        lines.append(f"{_SYMBOL[change.action]} {change.action} {change.alias}{who}{extra}: {change.reason}")
        for diff in change.diffs:
            arrow = (
                short_value(diff.after)
                if change.action == "create_team"
                else f"{short_value(diff.before)} -> {short_value(diff.after)}"
            )
            lines.append(f"    {diff.field}: {arrow}")
    return "\n".join(lines)


def render_team_json(plan: TeamPlan) -> dict[str, Any]:
    """The team plan for scripts."""
    return {
        "summary": plan.counts(),
        "unchanged": plan.unchanged,
        "waiting": plan.waiting,
        "problems": list(plan.problems),
        "changes": [change.to_dict() for change in plan.changes],
    }
