"""The team part of the plan: groups to LiteLLM teams and memberships. Purely computational.

`plan_teams(...)` compares the teams the config and the mapping ask for (the `teams:` section, each desired user's
`teams`, and with `scim.groups_as_teams` every SCIM group) with LiteLLM's `/team/list` and the store's record of what
syncd did, and returns the team changes of a `Plan`: create team, adopt team, update team, add member, update
member, remove member, forget member, each with its reason. The rules:

- a team is found by alias (case-insensitive); one carrying `metadata.syncd.managed` is syncd's and its settings are
  kept in step; any other is joined and left, never changed or deleted;
- syncd removes only the members it put in a team (the record), and adds only users that exist in LiteLLM or that
  the same plan creates (such a membership depends on that create);
- a suspended user keeps the memberships syncd gave them unless `suspended_leave_teams`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from syncd.mapping import normalise_group_key
from syncd.model import CurrentTeam, DesiredUser, ManagedTeam
from syncd.plan._changes import Action, FieldDiff, Plan, TeamChange

__all__ = [
    "MARKER",
    "SETTING_FIELDS",
    "TeamSpec",
    "alias_key",
    "join",
    "plan_teams",
    "states_after",
    "team_groups_of",
    "team_id_for",
]

#: syncd's mark on the LiteLLM teams it manages (metadata.syncd)
MARKER: Mapping[str, Any] = {"managed": True}
#: the team settings syncd keeps in step on its own teams
SETTING_FIELDS = ("models", "max_budget", "budget_duration", "tpm_limit", "rpm_limit")
_SLUG = re.compile(r"[^a-z0-9]+")


class TeamSpec(Protocol):
    """What the planner reads of a `teams:` entry (syncd.settings.TeamSettings satisfies it)."""

    @property
    def alias(self) -> str: ...
    @property
    def models(self) -> Sequence[str] | None: ...
    @property
    def max_budget(self) -> float | None: ...
    @property
    def budget_duration(self) -> str | None: ...
    @property
    def tpm_limit(self) -> int | None: ...
    @property
    def rpm_limit(self) -> int | None: ...
    @property
    def team_member_budget(self) -> float | None: ...
    @property
    def admin_groups(self) -> Sequence[str]: ...
    @property
    def admin_fallback_to_user(self) -> bool: ...


def alias_key(alias: str) -> str:
    """A team alias in the form used for matching and as the record key."""
    return alias.strip().casefold()


def team_id_for(alias: str, attempt: int = 0) -> str:
    """The team_id syncd gives a team it creates: readable, deterministic, with a suffix after a collision."""
    slug = _SLUG.sub("-", alias.strip().lower()).strip("-")[:48] or "team"
    digest = hashlib.sha256(alias_key(alias).encode()).hexdigest()[:8]
    return f"syncd-{slug}-{digest}" + (f"-{attempt}" if attempt else "")


_SUSPENDED = ("suspended", "suspending")
_MAPPING, _SCIM = "mapping", "scim"  # how a user came to be wanted in a team


def _same(name: str, want: Any, have: Any) -> bool:
    if name == "models":
        return sorted(want or []) == sorted(have or [])
    if isinstance(want, int | float) and isinstance(have, int | float) and not isinstance(want, bool):
        return math.isclose(float(want), float(have), rel_tol=1e-9, abs_tol=1e-9)
    return bool(want == have)


@dataclass(slots=True)
class _Wanted:
    """One team the config or the mapping asks for, and who should be in it (user_id -> _MAPPING or _SCIM)."""

    alias: str
    spec: TeamSpec | None = None
    members: dict[str, str] = field(default_factory=dict)


class _TeamPlanner:
    """Builds the change list team by team; a class only to share the inputs between small steps."""

    def __init__(
        self,
        desired: Mapping[str, DesiredUser],
        current: Sequence[CurrentTeam],
        managed_teams: Mapping[str, ManagedTeam],
        user_states: Mapping[str, str],
        *,
        suspended_leave_teams: bool,
        team_groups: Mapping[str, Collection[str]],
        only: Collection[str] | None,
        held: frozenset[str] = frozenset(),
    ) -> None:
        self.desired, self.managed_teams, self.states = desired, managed_teams, user_states
        self.team_groups = team_groups
        self.leave, self.only = suspended_leave_teams, only
        self.held = held
        self.by_id = {team.team_id: team for team in current}
        self.by_alias: dict[str, list[CurrentTeam]] = {}
        for team in reversed(current):  # /team/list is newest first: keep the oldest first
            if team.alias:
                self.by_alias.setdefault(alias_key(team.alias), []).append(team)
        self.used_ids = set(self.by_id)
        self.changes: list[TeamChange] = []
        self.records: dict[str, ManagedTeam] = {}
        self.problems: list[str] = []
        self.unchanged = self.waiting = 0

    # -- one team ---------------------------------------------------------------------------------------------------
    def plan_team(self, key: str, wanted: _Wanted) -> None:
        """Plan one team: find or create it, keep its settings if it is syncd's, then its memberships."""
        record = self.managed_teams.get(key)
        start = len(self.changes)
        joiners = self._joiners(wanted)
        team = self._resolve(key, wanted, record, joiners)
        if team is None:
            return
        managed = team.managed or (record is not None and record.managed and record.team_id == team.team_id)
        base = record if record is not None and record.team_id == team.team_id else None
        members = base.members if base is not None else frozenset()
        if base is None or base.managed != managed:
            self._adopt(key, wanted, team, managed)
        if managed:
            self._settings(key, wanted, team)
        elif wanted.spec is not None and _settings_of(wanted.spec):
            self.problems.append(
                f"team {wanted.alias!r} exists in LiteLLM without syncd's marker: joined and left only, "
                "its settings in teams: are not applied"
            )
        self._members(key, wanted, team, members, managed, joiners)
        self._finish(key, start, team.team_id, managed, members, wanted)

    def _finish(
        self, key: str, start: int, team_id: str, managed: bool, members: frozenset[str], wanted: _Wanted
    ) -> None:
        if len(self.changes) == start:
            self.unchanged += 1
            return
        self.records[key] = ManagedTeam(key, team_id, managed, self._applied(wanted, managed), members)

    @staticmethod
    def _applied(wanted: _Wanted, managed: bool) -> dict[str, Any]:
        applied: dict[str, Any] = {"team_alias": wanted.alias}
        if wanted.spec is not None and managed:
            applied.update(_settings_of(wanted.spec))
        return applied

    def _resolve(self, key: str, wanted: _Wanted, record: ManagedTeam | None, joiners: set[str]) -> CurrentTeam | None:
        """The LiteLLM team for this alias, or None after planning its creation or a conflict."""
        if record is not None and record.team_id in self.by_id:
            return self.by_id[record.team_id]
        candidates = self.by_alias.get(key, [])
        ours = [team for team in candidates if team.managed]
        if ours:
            return ours[0]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            self._add(
                TeamChange(
                    action=Action.TEAM_CONFLICT,
                    alias=wanted.alias,
                    key=key,
                    team_id=None,
                    reason=(
                        f"{len(candidates)} LiteLLM teams are named {wanted.alias!r} and none carries syncd's "
                        "marker; not touched (rename all but one)"
                    ),
                    managed=False,
                )
            )
            return None
        if wanted.spec is not None or joiners:
            self._create(key, wanted, record, joiners)
        return None

    def _create(self, key: str, wanted: _Wanted, record: ManagedTeam | None, joiners: set[str]) -> None:
        attempt = 0
        while team_id_for(wanted.alias, attempt) in self.used_ids:
            attempt += 1
        team_id = team_id_for(wanted.alias, attempt)
        self.used_ids.add(team_id)
        payload: dict[str, Any] = {"team_id": team_id, "team_alias": wanted.alias, "metadata": {"syncd": dict(MARKER)}}
        if wanted.spec is not None:
            payload.update(_settings_of(wanted.spec))
        diffs = tuple(
            FieldDiff(name, None, value, _origin(wanted)) for name, value in payload.items() if name != "metadata"
        )
        why = _why_wanted(wanted)
        if record is not None:
            why = (
                "managed team missing in LiteLLM: created again"
                if record.managed
                else f"{why}; the team joined before is gone"
            )
        self._add(
            TeamChange(
                action=Action.CREATE_TEAM,
                alias=wanted.alias,
                key=key,
                team_id=team_id,
                reason=why,
                diffs=diffs,
                payload=payload,
            )
        )
        for user_id in sorted(joiners):
            self._add_member(key, wanted, team_id, user_id, True, self._why_join(wanted, user_id), f"team:{key}")
        self.records[key] = ManagedTeam(key, team_id, True, self._applied(wanted, True), frozenset())

    def _adopt(self, key: str, wanted: _Wanted, team: CurrentTeam, managed: bool) -> None:
        why = (
            "found by alias, carries syncd's marker: managed"
            if managed
            else "found by alias, not created by syncd: members join and leave, the team is never changed"
        )
        self._add(
            TeamChange(
                action=Action.ADOPT_TEAM, alias=wanted.alias, key=key, team_id=team.team_id, reason=why, managed=managed
            )
        )

    def _settings(self, key: str, wanted: _Wanted, team: CurrentTeam) -> None:
        want: dict[str, Any] = {"team_alias": wanted.alias}
        if wanted.spec is not None:
            want.update(_settings_of(wanted.spec))
        diffs = tuple(
            FieldDiff(name, team.fields.get(name), value, _origin(wanted))
            for name, value in want.items()
            if not _same(name, value, team.fields.get(name))
        )
        payload: dict[str, Any] = {"team_id": team.team_id, **{d.field: d.after for d in diffs}}
        if not team.managed:  # the marker was removed by hand: /team/update replaces metadata whole
            payload["metadata"] = {**team.metadata, "syncd": dict(MARKER)}
        if diffs or not team.managed:
            why = "settings drifted in LiteLLM: corrected" if diffs else "syncd's marker restored"
            before = {name: team.fields.get(name) for name in want}
            self._add(
                TeamChange(
                    action=Action.UPDATE_TEAM,
                    alias=wanted.alias,
                    key=key,
                    team_id=team.team_id,
                    reason=why,
                    diffs=diffs,
                    payload=payload,
                    before=before,
                )
            )

    # -- memberships ------------------------------------------------------------------------------------------------
    def _members(
        self, key: str, wanted: _Wanted, team: CurrentTeam, recorded: frozenset[str], managed: bool, joiners: set[str]
    ) -> None:
        for user_id in sorted(joiners - set(team.members)):
            again = " (removed in LiteLLM: added again)" if user_id in recorded else ""
            self._add_member(key, wanted, team.team_id, user_id, managed, self._why_join(wanted, user_id) + again)
        budget = wanted.spec.team_member_budget if wanted.spec is not None and managed else None
        for user_id in sorted(recorded):
            present = user_id in team.members
            if user_id not in joiners and not self._held(user_id):
                # LiteLLM's /user/delete takes the user out of every team: nothing to send for a user deleted
                gone = self.states.get(user_id, "deleted") == "deleted"
                action = Action.REMOVE_MEMBER if present and not gone else Action.FORGET_MEMBER
                self._member_change(action, key, wanted, team.team_id, user_id, managed, self._why_leave(user_id))
            elif not present and user_id not in joiners:
                self._member_change(
                    Action.FORGET_MEMBER, key, wanted, team.team_id, user_id, managed, "no longer a member in LiteLLM"
                )
            elif present and budget is not None and not self._same_budget(budget, team, user_id):
                self._add(
                    TeamChange(
                        action=Action.UPDATE_MEMBER,
                        alias=wanted.alias,
                        key=key,
                        team_id=team.team_id,
                        reason="per-member budget (team_member_budget) drifted: corrected",
                        user_id=user_id,
                        max_budget_in_team=budget,
                        managed=managed,
                        before={"max_budget_in_team": team.member_budgets.get(user_id)},
                    )
                )

    @staticmethod
    def _same_budget(budget: float, team: CurrentTeam, user_id: str) -> bool:
        return user_id not in team.member_budgets or _same("budget", budget, team.member_budgets[user_id])

    def _joiners(self, wanted: _Wanted) -> set[str]:
        """Who should be a member now: active in the source, existing in LiteLLM, not suspended."""
        joiners = set()
        for user_id in wanted.members:
            if self._suspended(user_id):
                continue
            if self.states.get(user_id) == "active":
                joiners.add(user_id)
            else:
                self.waiting += 1  # not created in LiteLLM (yet): joining would make LiteLLM create a bare user
        return joiners

    def _suspended(self, user_id: str) -> bool:
        desired = self.desired.get(user_id)
        return self.states.get(user_id) in _SUSPENDED or (desired is not None and not desired.active)

    def _held(self, user_id: str) -> bool:
        """A suspended member keeps the teams syncd gave them unless policy.suspended_leave_teams."""
        if self.only is not None and user_id not in self.only:
            return True  # a run for some users only: everyone else's memberships stand
        if user_id in self.held:
            return True  # refused for an identity conflict: left as last applied
        return self._suspended(user_id) and not self.leave

    def _why_leave(self, user_id: str) -> str:
        if self._suspended(user_id):
            return "suspended (policy.suspended_leave_teams)"
        if self.states.get(user_id, "deleted") == "deleted":
            return "user deleted from LiteLLM"
        if user_id in self.desired:
            return "no longer in a group that gives this team"
        return "no longer in a mapped group"

    def _why_join(self, wanted: _Wanted, user_id: str) -> str:
        if wanted.members[user_id] == _SCIM:
            return f"member of SCIM group {wanted.alias!r} (scim.groups_as_teams)"
        return _why_member(self.desired[user_id], wanted.alias, self.team_groups)

    def _add_member(
        self, key: str, wanted: _Wanted, team_id: str, user_id: str, managed: bool, why: str, *after: str
    ) -> None:
        spec = wanted.spec
        admin = spec is not None and self._is_admin(spec, user_id)
        budget = spec.team_member_budget if spec is not None and managed else None
        self._add(
            TeamChange(
                action=Action.ADD_MEMBER,
                alias=wanted.alias,
                key=key,
                team_id=team_id,
                reason=why,
                user_id=user_id,
                role="admin" if admin else "user",
                max_budget_in_team=budget,
                admin_fallback=bool(spec is not None and spec.admin_fallback_to_user),
                managed=managed,
                depends_on=after,
            )
        )

    def _is_admin(self, spec: TeamSpec, user_id: str) -> bool:
        admin_groups = {normalise_group_key(group) for group in spec.admin_groups}
        user = self.desired.get(user_id)
        return bool(admin_groups and user and admin_groups & {normalise_group_key(g) for g in user.groups})

    def _member_change(
        self, action: Action, key: str, wanted: _Wanted, team_id: str, user_id: str, managed: bool, why: str
    ) -> None:
        self._add(
            TeamChange(
                action=action,
                alias=wanted.alias,
                key=key,
                team_id=team_id,
                reason=why,
                user_id=user_id,
                managed=managed,
            )
        )

    def _add(self, change: TeamChange) -> None:
        self.changes.append(change)


def _settings_of(spec: TeamSpec) -> dict[str, Any]:
    values = {name: getattr(spec, name, None) for name in SETTING_FIELDS}
    return {
        name: list(value) if isinstance(value, list | tuple) else value
        for name, value in values.items()
        if value is not None
    }


def _origin(wanted: _Wanted) -> str:
    return f"teams: {wanted.spec.alias}" if wanted.spec is not None else "mapping teams:"


def _why_wanted(wanted: _Wanted) -> str:
    if wanted.spec is not None:
        return f"in the teams: section as {wanted.spec.alias!r}"
    return f"named by a mapping's teams: ({len(wanted.members)} member(s))"


def _wanted_teams(
    desired: Mapping[str, DesiredUser],
    specs: Sequence[TeamSpec],
    groups_as_teams: Mapping[str, Sequence[str]],
    managed_teams: Mapping[str, ManagedTeam],
) -> dict[str, _Wanted]:
    wanted: dict[str, _Wanted] = {alias_key(spec.alias): _Wanted(spec.alias, spec) for spec in specs}
    for user_id in sorted(desired):
        user = desired[user_id]
        for alias in user.teams:
            _want(wanted, alias).members.setdefault(user_id, _MAPPING)
        for alias in groups_as_teams.get(user_id, ()):
            _want(wanted, alias).members.setdefault(user_id, _SCIM)
    for key, record in managed_teams.items():
        wanted.setdefault(key, _Wanted(str(record.applied.get("team_alias") or key)))
    return wanted


def _why_member(user: DesiredUser, alias: str, team_groups: Mapping[str, Collection[str]]) -> str:
    giving = team_groups.get(alias_key(alias), ())
    groups = [group for group in user.groups if normalise_group_key(group) in giving]
    if groups:
        return "member of " + ", ".join(groups)
    origin = user.origins.get("teams")
    return f"teams: from {origin.kind} {origin.name}" if origin is not None else "teams: from the mapping"


def team_groups_of(mappings: Iterable[Any]) -> dict[str, frozenset[str]]:
    """Which groups give each team (alias key -> normalised group keys), from the config's mappings."""
    giving: dict[str, set[str]] = {}
    for mapping in mappings:
        for alias in getattr(mapping, "teams", None) or ():
            giving.setdefault(alias_key(alias), set()).add(normalise_group_key(mapping.group))
    return {key: frozenset(groups) for key, groups in giving.items()}


def _want(wanted: dict[str, _Wanted], alias: str) -> _Wanted:
    return wanted.setdefault(alias_key(alias), _Wanted(alias.strip()))


def plan_teams(
    desired_users: Mapping[str, DesiredUser],
    team_settings: Sequence[TeamSpec],
    current_teams: Iterable[CurrentTeam],
    managed_teams: Mapping[str, ManagedTeam],
    user_states: Mapping[str, str],
    *,
    suspended_leave_teams: bool = False,
    groups_as_teams: Mapping[str, Sequence[str]] | None = None,
    team_groups: Mapping[str, Collection[str]] | None = None,
    only: Collection[str] | None = None,
    held: Collection[str] = (),
) -> Plan:
    """Plan the team changes that bring LiteLLM's teams to what the config and the groups say (a `Plan` of teams
    only: `join` it to the user plan).

    `current_teams` is LiteLLM's /team/list; `user_states` each user's state once the user plan is applied (see
    `states_after`: only users active in LiteLLM join a team); `groups_as_teams` maps a user_id to the SCIM group
    names that become teams (`scim.groups_as_teams`); `team_groups` (see `team_groups_of`) names, in each reason,
    the group that gave a membership; with `only` (a run for some users, `desired_users` holding just them) no one
    else's membership changes; the memberships of `held` users (refused for an identity conflict,
    `DesiredState.held`) stand too.
    """
    planner = _TeamPlanner(
        desired_users,
        list(current_teams),
        managed_teams,
        user_states,
        suspended_leave_teams=suspended_leave_teams,
        team_groups=team_groups or {},
        only=set(only) if only is not None else None,
        held=frozenset(held),
    )
    wanted = _wanted_teams(desired_users, team_settings, groups_as_teams or {}, managed_teams)
    for key in sorted(wanted):
        planner.plan_team(key, wanted[key])
    return Plan(
        teams=tuple(planner.changes),
        team_records=planner.records,
        problems=tuple(planner.problems),
        teams_unchanged=planner.unchanged,
        teams_waiting=planner.waiting,
    )


#: the state a user change leaves its user in
_STATE_AFTER = {
    Action.CREATE: "active",
    Action.ADOPT: "active",
    Action.UPDATE: "active",
    Action.REACTIVATE: "active",
    Action.SUSPEND: "suspended",
    Action.BLOCK_KEYS: "suspended",
    Action.DELETE: "deleted",
}


def states_after(user_plan: Plan, states: Mapping[str, str]) -> dict[str, str]:
    """Each user's state once the user plan is applied: the recorded states (user_id -> state) with its changes."""
    after = dict(states)
    for change in user_plan.changes:
        state = _STATE_AFTER.get(change.action)
        if state is not None:
            after[change.user_id] = state
    return after


#: the user changes a membership of the user waits for: the user exists in LiteLLM after them (a member can be
#: added), or is gone with every membership (forgotten)
_MEMBERSHIP_AFTER = {
    Action.CREATE: Action.ADD_MEMBER,
    Action.ADOPT: Action.ADD_MEMBER,
    Action.REACTIVATE: Action.ADD_MEMBER,
    Action.DELETE: Action.FORGET_MEMBER,
}


def join(users: Plan, teams: Plan) -> Plan:
    """One plan of the user plan and the team plan: a membership of a user the user plan creates, adopts,
    reactivates or deletes depends on that change."""
    waits = {
        (change.user_id, _MEMBERSHIP_AFTER[change.action]): change.ref
        for change in users.changes
        if change.action in _MEMBERSHIP_AFTER
    }
    linked = []
    for change in teams.teams:
        ref = waits.get((change.user_id or "", change.action))
        if ref is not None:
            change = replace(change, depends_on=(*change.depends_on, ref))
        linked.append(change)
    return replace(
        users,
        teams=tuple(linked),
        team_records=teams.team_records,
        problems=users.problems + teams.problems,
        teams_unchanged=teams.teams_unchanged,
        teams_waiting=teams.teams_waiting,
    )
