"""The plan as data: the `Action`s, the typed changes and the `Plan` that holds them. Purely computational.

Every change names its action and `ref` (what it changes: `user:ID`, `keys:ID`, `team:ALIAS`, `member:ALIAS:ID`)
and the refs it `depends_on`: apply runs a change only once those are done (a membership of a user being created
runs after that create; a team's members after the team's creation).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from syncd.model import ManagedTeam

__all__ = [
    "DEACTIVATIONS",
    "KEY_ACTIONS",
    "MEMBER_ACTIONS",
    "TEAM_ACTIONS",
    "USER_ACTIONS",
    "Action",
    "AnyChange",
    "Change",
    "FieldDiff",
    "Plan",
    "PlanPolicy",
    "TeamChange",
]


class Action(StrEnum):
    """What one change does. The values are what the journal, the audit log and `syncd plan --json` show."""

    CREATE = "create"
    ADOPT = "adopt"
    UPDATE = "update"
    REACTIVATE = "reactivate"
    SUSPEND = "suspend"
    DELETE = "delete"
    CONFLICT = "conflict"
    BLOCK_KEYS = "block_keys"
    UNBLOCK_KEYS = "unblock_keys"
    CREATE_TEAM = "create_team"
    ADOPT_TEAM = "adopt_team"
    UPDATE_TEAM = "update_team"
    TEAM_CONFLICT = "team_conflict"
    ADD_MEMBER = "add_member"
    UPDATE_MEMBER = "update_member"
    REMOVE_MEMBER = "remove_member"
    FORGET_MEMBER = "forget_member"


USER_ACTIONS = (
    Action.CREATE,
    Action.ADOPT,
    Action.UPDATE,
    Action.REACTIVATE,
    Action.SUSPEND,
    Action.DELETE,
    Action.CONFLICT,
)
KEY_ACTIONS = (Action.BLOCK_KEYS, Action.UNBLOCK_KEYS)
TEAM_ACTIONS = (Action.CREATE_TEAM, Action.ADOPT_TEAM, Action.UPDATE_TEAM, Action.TEAM_CONFLICT)
MEMBER_ACTIONS = (Action.ADD_MEMBER, Action.UPDATE_MEMBER, Action.REMOVE_MEMBER, Action.FORGET_MEMBER)
#: the actions that take access away (what the deactivation guard weighs)
DEACTIVATIONS = (Action.SUSPEND, Action.DELETE)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanPolicy:
    """The policy knobs the plan needs, as plain data."""

    adopt_existing: bool = False
    deactivation: str = "suspend"  # suspend | delete
    delete_after_s: float | None = None
    unmapped_users: str = "deactivate"  # deactivate | ignore
    max_deactivations: int = 50
    max_deactivation_ratio: float = 0.10
    allow_mass_deactivation: bool = False
    now: float = 0.0  # unix time, for delete_after
    suspended_leave_teams: bool = False


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field that changes: its value before, after, and where the new value came from."""

    field: str
    before: Any
    after: Any
    origin: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One planned change to one LiteLLM user, or to the keys syncd blocks for them."""

    action: Action
    user_id: str
    reason: str
    source: str | None = None
    external_id: str | None = None
    #: the full desired LiteLLM fields (create, adopt, update, reactivate), including metadata
    after: Mapping[str, Any] | None = None
    diffs: tuple[FieldDiff, ...] = ()
    #: the fields as last applied (store) or read (LiteLLM) before this change
    before: Mapping[str, Any] | None = None
    #: create only: whether LiteLLM should generate a key
    auto_create_key: bool = False
    #: suspend, block_keys: every key syncd blocks for the user (those it blocked already included);
    #: reactivate, unblock_keys: the keys syncd blocked, which it unblocks
    blocked_keys: tuple[str, ...] = ()
    adopted: bool = False
    #: False for a deactivation that takes no access away (finishing a suspension, deleting a suspended user)
    guarded: bool = True
    #: a conflict's kind (user_id_taken, email_taken, bound_elsewhere, refused) and the other party, if any
    conflict_kind: str | None = None
    other: str | None = None
    #: the binding, when the source now names the person otherwise: "user_id kept as x; the directory now says y"
    note: str | None = None
    #: `fields_digest` of the person's desired fields (writes and conflicts): a stored conflict waits for it to change
    inputs_digest: str | None = None
    #: a suspension re-applied (drift check): when the user was first suspended, which delete_after counts from
    suspended_at: float | None = None
    depends_on: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """What this change changes: `user:ID`, or `keys:ID` for a key change."""
        return f"{'keys' if self.action in KEY_ACTIONS else 'user'}:{self.user_id}"

    @property
    def journal_key(self) -> str:
        """The journal and audit key: the user_id."""
        return self.user_id

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON-ready data (shallow copies: the plan is immutable, its values plain)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _CHANGE_FIELDS}
        data["action"] = str(self.action)
        data["after"] = None if self.after is None else dict(self.after)
        data["before"] = None if self.before is None else dict(self.before)
        data["blocked_keys"] = list(self.blocked_keys)
        data["depends_on"] = list(self.depends_on)
        data["diffs"] = [
            {"field": d.field, "before": d.before, "after": d.after, "origin": d.origin} for d in self.diffs
        ]
        return data


_CHANGE_FIELDS = tuple(f.name for f in fields(Change))


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamChange:
    """One planned change to one team, or to one membership of a team."""

    action: Action
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
    depends_on: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """What this change changes: `team:ALIAS`, or `member:ALIAS:ID` for a membership."""
        return f"team:{self.key}" if self.user_id is None else f"member:{self.key}:{self.user_id}"

    @property
    def journal_key(self) -> str:
        """The journal and audit key: `team:<alias>`."""
        return f"team:{self.alias}"[:255]

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON-ready data."""
        data = asdict(self)
        data["action"] = str(self.action)
        data["diffs"] = [asdict(diff) for diff in self.diffs]
        data["payload"] = dict(self.payload) if self.payload is not None else None
        data["before"] = dict(self.before) if self.before is not None else None
        data["depends_on"] = list(self.depends_on)
        return data


AnyChange = Change | TeamChange


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything one reconcile changes: users and their keys, teams and memberships; and why it is held if it is."""

    changes: tuple[Change, ...] = ()
    teams: tuple[TeamChange, ...] = ()
    #: each changed team's record before this plan's changes (apply keeps it)
    team_records: Mapping[str, ManagedTeam] = field(default_factory=dict)
    held: str | None = None
    problems: tuple[str, ...] = ()
    unchanged: int = 0
    unmapped_ignored: int = 0
    #: people the source names otherwise than their bound user_id: (bound user_id, what the source says now)
    renamed: tuple[tuple[str, str], ...] = ()
    teams_unchanged: int = 0
    #: memberships of users that do not exist in LiteLLM and are not created by this plan
    teams_waiting: int = 0

    @property
    def steps(self) -> Iterator[AnyChange]:
        """Every change, users and keys first, then teams and memberships (an order that meets every dependency)."""
        yield from self.changes
        yield from self.teams

    @property
    def conflicts(self) -> tuple[Change, ...]:
        """The planned conflicts of users (nothing is written for them)."""
        return tuple(c for c in self.changes if c.action == Action.CONFLICT)

    def counts(self) -> dict[str, int]:
        """How many user and key changes of each action."""
        counts = dict.fromkeys(map(str, (*USER_ACTIONS, *KEY_ACTIONS)), 0)
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        return counts

    def team_counts(self) -> dict[str, int]:
        """How many team and membership changes of each action."""
        counts = dict.fromkeys(map(str, (*TEAM_ACTIONS, *MEMBER_ACTIONS)), 0)
        for change in self.teams:
            counts[change.action] += 1
        return counts

    @property
    def deactivations(self) -> int:
        """Suspensions and deletions of users that are active now (what the guard counts)."""
        return sum(1 for c in self.changes if c.action in DEACTIVATIONS and c.guarded)

    @property
    def empty(self) -> bool:
        """True when there is nothing to do."""
        return not self.changes and not self.teams
