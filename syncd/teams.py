"""Groups to LiteLLM teams: a purely computational module with no side effects.

`plan_teams(...)` compares the teams the config and the mapping ask for (the `teams:` section, each desired user's
`teams`, and with `scim.groups_as_teams` every SCIM group) with LiteLLM's `/team/list` and the store's record of what
syncd did, and returns an immutable `TeamPlan`: create team, adopt team, update team, add member, update member,
remove member, forget member, each with its reason. The rules:

- a team is found by alias (case-insensitive); one carrying `metadata.syncd.managed` is syncd's and its settings are
  kept in step; any other is joined and left, never changed or deleted;
- syncd removes only the members it put in a team (the record), and adds only users that exist in LiteLLM;
- a suspended user keeps the memberships syncd gave them unless `suspended_leave_teams`.
"""

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncd.mapping import normalise_group_key
from syncd.model import DesiredUser, ManagedUser
from syncd.plan import FieldDiff
from syncd.team_plan import (
    MARKER,
    SETTING_FIELDS,
    TEAM_ACTIONS,
    TEAM_LEVEL,
    CurrentTeam,
    ManagedTeam,
    TeamChange,
    TeamPlan,
    TeamSpec,
    alias_key,
    current_team,
    render_team_json,
    render_team_text,
    team_id_for,
)

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
    "plan_teams",
    "render_team_json",
    "render_team_text",
    "team_groups_of",
    "team_id_for",
]

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
        managed_users: Mapping[str, ManagedUser],
        *,
        suspended_leave_teams: bool,
        pending_users: Collection[str],
        team_groups: Mapping[str, Collection[str]],
        only: Collection[str] | None,
        held: frozenset[str] = frozenset(),
    ) -> None:
        self.desired, self.managed_teams, self.managed_users = desired, managed_teams, managed_users
        self.team_groups = team_groups
        self.leave, self.pending, self.only = suspended_leave_teams, pending_users, only
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
                    "conflict",
                    wanted.alias,
                    key,
                    None,
                    f"{len(candidates)} LiteLLM teams are named {wanted.alias!r} and none carries syncd's marker; "
                    "not touched (rename all but one)",
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
        self._add(TeamChange("create_team", wanted.alias, key, team_id, why, diffs=diffs, payload=payload))
        for user_id in sorted(joiners):
            self._add_member(key, wanted, team_id, user_id, True, self._why_join(wanted, user_id))
        self.records[key] = ManagedTeam(key, team_id, True, self._applied(wanted, True), frozenset())

    def _adopt(self, key: str, wanted: _Wanted, team: CurrentTeam, managed: bool) -> None:
        why = (
            "found by alias, carries syncd's marker: managed"
            if managed
            else "found by alias, not created by syncd: members join and leave, the team is never changed"
        )
        self._add(TeamChange("adopt_team", wanted.alias, key, team.team_id, why, managed=managed))

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
                    "update_team", wanted.alias, key, team.team_id, why, diffs=diffs, payload=payload, before=before
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
                action = "remove_member" if present else "forget_member"
                self._member_change(action, key, wanted, team.team_id, user_id, managed, self._why_leave(user_id))
            elif not present and user_id not in joiners:
                self._member_change(
                    "forget_member", key, wanted, team.team_id, user_id, managed, "no longer a member in LiteLLM"
                )
            elif present and budget is not None and not self._same_budget(budget, team, user_id):
                self._add(
                    TeamChange(
                        "update_member",
                        wanted.alias,
                        key,
                        team.team_id,
                        "per-member budget (team_member_budget) drifted: corrected",
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
            user = self.managed_users.get(user_id)
            if (user is not None and user.state == "active") or user_id in self.pending:
                joiners.add(user_id)
            else:
                self.waiting += 1  # not created in LiteLLM (yet): joining would make LiteLLM create a bare user
        return joiners

    def _suspended(self, user_id: str) -> bool:
        user = self.managed_users.get(user_id)
        desired = self.desired.get(user_id)
        return (user is not None and user.state in _SUSPENDED) or (desired is not None and not desired.active)

    def _held(self, user_id: str) -> bool:
        """A suspended member keeps the teams syncd gave them unless policy.suspended_leave_teams."""
        if self.only is not None and user_id not in self.only:
            return True  # a run for some users only: everyone else's memberships stand
        if user_id in self.held:
            return True  # refused for an identity conflict: left as last applied
        return self._suspended(user_id) and not self.leave

    def _why_leave(self, user_id: str) -> str:
        user = self.managed_users.get(user_id)
        if self._suspended(user_id):
            return "suspended (policy.suspended_leave_teams)"
        if user is None or user.state == "deleted":
            return "user deleted from LiteLLM"
        if user_id in self.desired:
            return "no longer in a group that gives this team"
        return "no longer in a mapped group"

    def _why_join(self, wanted: _Wanted, user_id: str) -> str:
        if wanted.members[user_id] == _SCIM:
            return f"member of SCIM group {wanted.alias!r} (scim.groups_as_teams)"
        return _why_member(self.desired[user_id], wanted.alias, self.team_groups)

    def _add_member(self, key: str, wanted: _Wanted, team_id: str, user_id: str, managed: bool, why: str) -> None:
        spec = wanted.spec
        admin = spec is not None and self._is_admin(spec, user_id)
        budget = spec.team_member_budget if spec is not None and managed else None
        self._add(
            TeamChange(
                "add_member",
                wanted.alias,
                key,
                team_id,
                why,
                user_id=user_id,
                role="admin" if admin else "user",
                max_budget_in_team=budget,
                admin_fallback=bool(spec is not None and spec.admin_fallback_to_user),
                managed=managed,
            )
        )

    def _is_admin(self, spec: TeamSpec, user_id: str) -> bool:
        admin_groups = {normalise_group_key(group) for group in spec.admin_groups}
        user = self.desired.get(user_id)
        return bool(admin_groups and user and admin_groups & {normalise_group_key(g) for g in user.groups})

    def _member_change(
        self, action: str, key: str, wanted: _Wanted, team_id: str, user_id: str, managed: bool, why: str
    ) -> None:
        self._add(TeamChange(action, wanted.alias, key, team_id, why, user_id=user_id, managed=managed))

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
    current_teams: Iterable[Mapping[str, Any]],
    managed_teams: Mapping[str, ManagedTeam],
    managed_users: Mapping[str, ManagedUser],
    *,
    suspended_leave_teams: bool = False,
    groups_as_teams: Mapping[str, Sequence[str]] | None = None,
    pending_users: Collection[str] = (),
    team_groups: Mapping[str, Collection[str]] | None = None,
    only: Collection[str] | None = None,
    held: Collection[str] = (),
) -> TeamPlan:
    """Plan the team changes that bring LiteLLM's teams to what the config and the groups say.

    `current_teams` is LiteLLM's /team/list; `managed_users` the store's users after this run's user changes (only
    users that exist in LiteLLM join a team); `pending_users` users about to be created (a dry run's preview);
    `groups_as_teams` maps a user_id to the SCIM group names that become teams (`scim.groups_as_teams`);
    `team_groups` (see `team_groups_of`) names, in each reason, the group that gave a membership; with `only`
    (a run for some users, `desired_users` holding just them) no one else's membership changes; the memberships of
    `held` users (refused for an identity conflict, `DesiredState.held`) stand too.
    """
    planner = _TeamPlanner(
        desired_users,
        [current_team(team) for team in current_teams],
        managed_teams,
        managed_users,
        suspended_leave_teams=suspended_leave_teams,
        pending_users=set(pending_users),
        team_groups=team_groups or {},
        only=set(only) if only is not None else None,
        held=frozenset(held),
    )
    wanted = _wanted_teams(desired_users, team_settings, groups_as_teams or {}, managed_teams)
    for key in sorted(wanted):
        planner.plan_team(key, wanted[key])
    return TeamPlan(
        tuple(planner.changes), planner.records, tuple(planner.problems), planner.unchanged, planner.waiting
    )
