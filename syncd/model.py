"""The domain's plain data: what sources say, what LiteLLM should hold, what it holds.

Frozen dataclasses only; no I/O library is imported here, so the pure core (mapping, plan) can depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ROLES",
    "ROLE_RANK",
    "CurrentKey",
    "CurrentTeam",
    "CurrentUser",
    "DesiredUser",
    "FieldOrigin",
    "Group",
    "Identity",
    "KnownConflict",
    "ManagedTeam",
    "ManagedUser",
    "Snapshot",
    "email_problem",
]

#: LiteLLM user roles, most privileged first (CONTRACT.md precedence).
ROLES: tuple[str, ...] = (
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
    "team",
    "customer",
)
ROLE_RANK: Mapping[str, int] = {role: len(ROLES) - i for i, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Identity:
    """A person as one source describes them."""

    source: str
    external_id: str  # the source's stable id: entryUUID, objectGUID, ipaUniqueID, the SCIM resource id
    user_id: str  # the LiteLLM user_id this person gets
    email: str
    display_name: str | None = None
    active: bool = True
    dn: str | None = None
    #: personal grant overrides read from the source (issue 9); field name -> value
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: the order in which the store first recorded this identity (its row id); None: not recorded yet
    recorded: int | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """A group as one source describes it, with its members' external ids (nested groups already expanded)."""

    source: str
    external_id: str
    name: str  # CN for LDAP, displayName for SCIM
    dn: str | None = None
    members: frozenset[str] = frozenset()
    #: a grant carried by the group itself (issue 9); field name -> value
    grant: Mapping[str, Any] = field(default_factory=dict)
    #: members reached through a nested group: member external id -> the direct child group's external id
    via: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    """What one pull of a source returned.

    `complete` is False whenever anything went wrong (error, timeout, size limit, partial or suddenly empty result):
    nothing may be deactivated from an incomplete snapshot. An incremental snapshot holds only what changed; groups in
    it carry their whole member list.
    """

    source: str
    identities: list[Identity] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    complete: bool = True
    incremental: bool = False
    problems: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    #: the high-water mark to store when this snapshot is recorded (modifyTimestamp, uSNChanged), if any
    high_water_mark: str | None = None
    #: a change-based sync (RFC 4533 content sync): incremental in form (only what changed), yet complete in meaning,
    #: since the source said what is gone; recorded as a full pull would be
    change_based: bool = False
    #: what a change-based snapshot reports gone, by external id: recorded absent, as a full snapshot's missing rows
    removed_identities: set[str] = field(default_factory=set)
    removed_groups: set[str] = field(default_factory=set)
    #: the content sync cookies to store with the snapshot (opaque text), if any
    sync_cookie: str | None = None
    #: what the cookies go with (opaque bytes): the source's directory index, whole (`sync_index_base`) or what
    #: changed in it since the cookies recorded before; stored with them, so that a new process can continue
    sync_index: bytes | None = None
    sync_index_base: bool = False
    #: of a change-based snapshot: every person (external id) whose memberships may have changed; the others' are
    #: known unchanged in every group (None: compare every member of the groups sent)
    member_hint: set[str] | None = None


@dataclass(frozen=True, slots=True)
class FieldOrigin:
    """Where a desired field's value came from: a config mapping, a group attribute, a user override, a default."""

    kind: str  # "mapping" | "group_attribute" | "override" | "default"
    name: str  # the group name/DN, the attribute, or "defaults"


@dataclass(frozen=True, slots=True)
class DesiredUser:
    """What one managed LiteLLM user should look like, with the origin of every field."""

    user_id: str
    email: str
    source: str
    external_id: str
    active: bool
    role: str
    models: tuple[str, ...] = ()
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    auto_create_keys: bool = False
    teams: tuple[str, ...] = ()
    user_alias: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    origins: Mapping[str, FieldOrigin] = field(default_factory=dict)
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ManagedUser:
    """The store's record of a LiteLLM user syncd manages, and what it last applied there."""

    user_id: str
    source: str
    external_id: str
    state: str  # "active" | "suspended" | "deleted"
    applied: Mapping[str, Any]  # the LiteLLM fields last applied (see plan.USER_FIELDS)
    blocked_keys: tuple[str, ...] = ()
    suspended_at: float | None = None  # unix time
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """A LiteLLM user as LiteLLM itself reported it (read for the users about to change, or by the drift check)."""

    user_id: str
    email: str | None
    fields: Mapping[str, Any]  # user_role, models, tpm_limit, ... as LiteLLM holds them
    metadata: Mapping[str, Any]

    @property
    def managed(self) -> bool:
        """True when the user carries syncd's marker."""
        marker = self.metadata.get("syncd")
        return isinstance(marker, Mapping) and marker.get("managed") is True


@dataclass(frozen=True, slots=True)
class KnownConflict:
    """A conflict stored by an earlier run: not retried while the desired fields keep this digest."""

    user_id: str
    source: str
    external_id: str
    kind: str  # user_id_taken | email_taken | bound_elsewhere | refused
    reason: str
    other: str | None = None
    inputs_digest: str | None = None


@dataclass(frozen=True, slots=True)
class CurrentKey:
    """A LiteLLM virtual key of a user, as /key/list shows it (`token` is the hashed key, never the secret)."""

    token: str
    blocked: bool


@dataclass(frozen=True, slots=True)
class CurrentTeam:
    """A team as LiteLLM's /team/list shows it."""

    team_id: str
    alias: str | None
    fields: Mapping[str, Any]  # team_alias, models, max_budget, budget_duration, tpm_limit, rpm_limit
    metadata: Mapping[str, Any]
    members: Mapping[str, str]  # user_id -> role
    member_budgets: Mapping[str, float | None]  # user_id -> max_budget_in_team, for members whose budget was shown

    @property
    def managed(self) -> bool:
        """True when the team carries syncd's marker."""
        marker = self.metadata.get("syncd")
        return isinstance(marker, Mapping) and marker.get("managed") is True


@dataclass(frozen=True, slots=True)
class ManagedTeam:
    """The store's record of a team syncd uses: its id, whether syncd manages it, and the members syncd put there."""

    alias: str  # alias_key(): the record's key
    team_id: str
    managed: bool  # False: a team syncd only joins and leaves
    applied: Mapping[str, Any] = field(default_factory=dict)
    members: frozenset[str] = frozenset()


_LOCAL_ATOM = re.compile(r"[^\s\x00-\x1f\x7f()<>\[\]\\,;:@\"]+")
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"')
_LABEL = re.compile(r"[^\W_](?:[\w-]{0,61}[^\W_])?")
_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+\]|\[IPv6:[0-9A-Fa-f:.]+\]")


def email_problem(address: str) -> str | None:
    """What makes `address` not a syntactically valid email (None: it is one). Syntax only, the same for every
    source: no deliverability or special-use check (`test.user@okta.local` is an email), the case kept as given
    (compare addresses case-insensitively)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "an email address is local-part@domain"
    if len(local) > 64:
        return "the part before the @ is longer than 64 characters"
    dotted = local.split(".")
    if not _QUOTED_LOCAL.fullmatch(local) and not all(_LOCAL_ATOM.fullmatch(atom) for atom in dotted):
        return "the part before the @ holds a character an address cannot hold, or an empty dot-separated part"
    if _LITERAL.fullmatch(domain):
        return None
    labels = domain.removesuffix(".").split(".")
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "the part after the @ is not a domain name"
    return None
