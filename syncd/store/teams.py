"""The store's side of teams: the record of the teams syncd uses, and SCIM groups as teams.

Team changes are journaled in the same `changes` table as user changes (by `StateStore.journal`, keyed
`team:<alias>`), and audited in `audit_log` under the same key; `managed_teams` keeps, per team, its id, whether
syncd manages it, and the members syncd put there (the only members it ever removes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update

from syncd.model import ManagedTeam
from syncd.store.tables import groups, identities, managed_teams, managed_users, memberships

__all__ = ["ScimTeamMember", "TeamRecords"]


@dataclass(frozen=True, slots=True)
class ScimTeamMember:
    """A present member of a present SCIM group (scim.groups_as_teams)."""

    user_id: str
    email_lower: str
    group: str  # the group's displayName


class TeamRecords:
    """Managed teams, the users' states team planning needs, and SCIM groups as teams (a part of `SyncStore`)."""

    engine: Engine

    def load_teams(self) -> dict[str, ManagedTeam]:
        """Every team record by alias key."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(managed_teams)).mappings().all()
        return {
            row["alias"]: ManagedTeam(
                row["alias"], row["team_id"], row["managed"], row["applied"] or {}, frozenset(row["members"] or ())
            )
            for row in rows
        }

    def save_teams(self, records: Iterable[ManagedTeam]) -> None:
        """Insert or replace team records, in one transaction."""
        rows = [self._row(record) for record in records]
        if not rows:
            return
        with self.engine.begin() as conn:
            existing = set(
                conn.scalars(select(managed_teams.c.alias).where(managed_teams.c.alias.in_([r["alias"] for r in rows])))
            )
            updates = [{**row, "b_alias": row["alias"]} for row in rows if row["alias"] in existing]
            inserts = [row for row in rows if row["alias"] not in existing]
            if updates:
                statement = update(managed_teams).where(managed_teams.c.alias == bindparam("b_alias"))
                conn.execute(statement.values({name: bindparam(name) for name in rows[0] if name != "alias"}), updates)
            if inserts:
                conn.execute(insert(managed_teams), inserts)

    @staticmethod
    def _row(record: ManagedTeam) -> dict[str, Any]:
        return {
            "alias": record.alias,
            "team_id": record.team_id,
            "managed": record.managed,
            "applied": dict(record.applied),
            "members": sorted(record.members),
            "updated_at": datetime.now(UTC),
        }

    def user_states(self) -> dict[str, str]:
        """Every managed user's state (what team planning needs), by user_id."""
        with self.engine.connect() as conn:
            return {row[0]: row[1] for row in conn.execute(select(managed_users.c.user_id, managed_users.c.state))}

    def scim_team_members(self, sources: Collection[str]) -> list[ScimTeamMember]:
        """The present members of every present group of these SCIM sources."""
        if not sources:
            return []
        query = (
            select(identities.c.user_id, identities.c.email_lower, groups.c.name)
            .select_from(memberships.join(groups).join(identities))
            .where(groups.c.source.in_(list(sources)), groups.c.present, identities.c.present)
        )
        with self.engine.connect() as conn:
            return [ScimTeamMember(row[0], row[1], row[2]) for row in conn.execute(query)]
