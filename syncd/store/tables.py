"""The store's tables (SQLAlchemy Core). Alembic migrations in migrations/ create exactly these.

identities, groups, memberships: what each source says (LDAP pulls and SCIM pushes write here; sources only record).
managed_users: the LiteLLM users syncd manages and what it last applied. sync_runs, changes (the journal) and
audit_log: what each reconcile did. source_state: high-water marks and last success per source. leader_lease: which
replica runs the scheduled work.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "audit_log",
    "changes",
    "conflicts",
    "groups",
    "identities",
    "leader_lease",
    "managed_teams",
    "managed_users",
    "memberships",
    "metadata",
    "source_state",
    "sync_runs",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_Id = BigInteger().with_variant(Integer, "sqlite")

identities = Table(
    "identities",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("source", String(100), nullable=False),
    Column("external_id", String(255), nullable=False),  # entryUUID, objectGUID, ipaUniqueID, SCIM id
    Column("user_id", String(255), nullable=False),  # the LiteLLM user_id
    Column("email", String(320), nullable=False),
    Column("email_lower", String(320), nullable=False),
    Column("display_name", String(500)),
    Column("active", Boolean, nullable=False, default=True),
    Column("present", Boolean, nullable=False, default=True),  # False once the source no longer has it
    Column("dn", Text),
    Column("overrides", JSON, nullable=False, default=dict),  # personal grant overrides (issue 9)
    # a digest of the values a pull compares (sources.row_digest): an unchanged row is not read (NULL: compare in full)
    Column("digest", String(32)),
    # SCIM: userName (and its lower-case form for case-insensitive filters), externalId, the stored resource
    Column("user_name", String(500)),
    Column("user_name_lower", String(500)),
    Column("scim_external_id", String(500)),
    Column("resource", JSON),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source", "external_id"),
    Index(None, "user_id"),
    Index(None, "email_lower"),
    Index(None, "source", "user_name_lower"),
)

groups = Table(
    "groups",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("source", String(100), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("name", String(500), nullable=False),  # CN or SCIM displayName
    Column("name_lower", String(500), nullable=False),
    Column("dn", Text),
    Column("dn_lower", Text),
    Column("present", Boolean, nullable=False, default=True),
    Column("grant", JSON, nullable=False, default=dict),  # a grant kept in the directory (issue 9)
    # a digest of the group's recorded members (and the nesting each came through): an unchanged group is skipped
    Column("members_digest", String(64)),
    Column("digest", String(32)),  # as identities.digest
    Column("scim_external_id", String(500)),
    Column("resource", JSON),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source", "external_id"),
    Index(None, "name_lower"),
)

memberships = Table(
    "memberships",
    metadata,
    Column("group_id", _Id, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("identity_id", _Id, ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True),
    Column("source", String(100), nullable=False),
    Column("via", Text),  # for nested LDAP groups: the path of group names that led here
    Index(None, "identity_id"),
)

managed_users = Table(
    "managed_users",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("source", String(100), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("state", String(20), nullable=False),  # active | suspended | deleted
    Column("applied", JSON, nullable=False),  # the LiteLLM fields last applied
    # a digest of `applied` in plan.fields_digest's canonical form: an unchanged user's applied is not read
    Column("applied_digest", String(32)),
    Column("blocked_keys", JSON, nullable=False, default=list),  # the key tokens syncd blocked at suspension
    Column("adopted", Boolean, nullable=False, default=False),
    Column("suspended_at", DateTime(timezone=True)),
    Column("checked_at", DateTime(timezone=True)),  # last time LiteLLM itself was read for this user
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "state"),
    Index(None, "external_id"),  # the binding: a person is found by their external id when their name changes
)

#: what LiteLLM or another owner keeps refusing, per LiteLLM user_id syncd wanted to write: not retried until the
#: desired fields (their digest) change or a drift check runs
conflicts = Table(
    "conflicts",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("source", String(100), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("kind", String(40), nullable=False),  # user_id_taken | email_taken | bound_elsewhere | refused
    Column("reason", Text, nullable=False),
    Column("other", String(255)),  # the other LiteLLM user_id or identity, where there is one
    Column("inputs_digest", String(32)),  # plan.fields_digest of the desired fields that met the conflict
    Column("detected_at", DateTime(timezone=True), nullable=False),
)

managed_teams = Table(
    "managed_teams",
    metadata,
    Column("alias", String(255), primary_key=True),
    Column("team_id", String(255), nullable=False),
    Column("managed", Boolean, nullable=False),  # False: a team syncd only joins and leaves
    Column("applied", JSON, nullable=False),
    Column("members", JSON, nullable=False, default=list),  # the user_ids syncd put in the team
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("trigger", String(50), nullable=False),  # cli | schedule | scim | drift
    Column("sources", String(500)),
    Column("status", String(20), nullable=False),  # running | success | failed | held | dry_run
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("summary", JSON, nullable=False, default=dict),
    Column("error", Text),
)

changes = Table(
    "changes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_id", _Id, ForeignKey("sync_runs.id"), nullable=False),
    Column("key", String(255), nullable=False),  # user_id, or team alias
    Column("action", String(30), nullable=False),
    Column("change", JSON, nullable=False),  # the planned change as data
    Column("status", String(20), nullable=False),  # pending | done | failed | skipped
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "status"),
    Index(None, "run_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("run_id", _Id),
    Column("actor", String(100), nullable=False),  # the source or trigger that caused it
    Column("action", String(30), nullable=False),
    Column("key", String(255), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    Column("reason", Text),
    Index(None, "key"),
)

source_state = Table(
    "source_state",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("high_water_mark", String(255)),
    Column("last_full_at", DateTime(timezone=True)),
    Column("last_success_at", DateTime(timezone=True)),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("counters", JSON, nullable=False, default=dict),
    Column("sync_cookie", Text),
)

leader_lease = Table(
    "leader_lease",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

from sqlalchemy import Float  # noqa: E402  (kept with the SCIM block so that it stays one separate edit)

# SCIM (migration 0002): a SCIM userName is unique per source among present users, and every attribute value of a
# SCIM user that is not a column of identities is indexed here so that any filter translates to SQL.
Index(
    "uq_identities_source_user_name_present",
    identities.c.source,
    identities.c.user_name_lower,
    unique=True,
    sqlite_where=identities.c.present,
    postgresql_where=identities.c.present,
)

scim_user_values = Table(
    "scim_user_values",
    metadata,
    Column("identity_id", _Id, ForeignKey("identities.id", ondelete="CASCADE"), nullable=False),
    Column("path", String(300), nullable=False),  # lower-case attribute path: emails.value, urn:...:user:department
    Column("item", Integer, nullable=False),  # position in a multi-valued attribute, 0 for a single value
    Column("key", String(600)),  # comparison form: NFC, lower-cased unless caseExact; dateTime as UTC ISO 8601
    Column("number", Float),  # integer and decimal values
    Index(None, "identity_id"),
    Index(None, "path", "key"),
)
__all__ += ["scim_user_values"]
memberships.append_column(Column("display", String(500)))  # a SCIM member's display, as the provider sent it

#: The longest values the columns above hold. Every write from outside is checked against them first, so that
#: SQLite (which would store longer text) and PostgreSQL (which would fail) refuse exactly the same values.
MAX_USER_ID = 255  # identities.user_id, external_id; a SCIM member value
MAX_EMAIL = 320  # identities.email
MAX_TEXT = 500  # identities.display_name, user_name, scim_external_id; groups.name; memberships.display
__all__ += ["MAX_EMAIL", "MAX_TEXT", "MAX_USER_ID"]

# SCIM (migration 0007): group members named before their user exists (RFC 7644 has no referential integrity). Each
# takes effect when a user of the same source arrives whose id, externalId or userName (its `value_key` form) is the
# value; until then the group's responses do not list it.
scim_pending_members = Table(
    "scim_pending_members",
    metadata,
    Column("group_id", _Id, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("value", String(255), primary_key=True),  # the member value as the provider sent it
    Column("source", String(100), nullable=False),
    Column("value_key", String(500), nullable=False),  # NFC, case-folded: compared with a userName
    Column("display", String(500)),
    Index(None, "source", "value"),
    Index(None, "source", "value_key"),
)
__all__ += ["scim_pending_members"]

# migration 0008: per LDAP source, the content sync index its stored cookie goes with: seq 0 a base, then deltas
source_index = Table(
    "source_index",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("body", LargeBinary, nullable=False),
)
__all__ += ["source_index"]

# The guard over time (migration 0009). held_plans: the deactivations the guard held, as objects an admin approves
# or rejects; deactivation_history: every deactivation applied, with whether the guard counted it (an approved
# one is not), for the rolling window.
held_plans = Table(
    "held_plans",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_id", _Id),  # the run that held it
    Column("last_run_id", _Id),  # the last run that still held it
    Column("status", String(20), nullable=False),  # held | approved | rejected | applied | superseded
    Column("reason", Text, nullable=False),
    Column("digest", String(32), nullable=False),  # guard.held_digest of the deactivations: its inputs
    Column("changes", JSON, nullable=False),  # the held changes as Change.to_dict wrote them
    Column("deactivations", Integer, nullable=False),
    Column("held_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(200)),  # who approved or rejected it
    Column("note", Text),
    Column("closed_run_id", _Id),  # the run that applied or superseded it
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "status"),
)
deactivation_history = Table(
    "deactivation_history",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("action", String(20), nullable=False),  # suspend | delete
    Column("run_id", _Id),
    Column("counted", Boolean, nullable=False),  # False: approved (a held plan, --allow-mass-deactivation)
    Index(None, "at"),
)
__all__ += ["deactivation_history", "held_plans"]
