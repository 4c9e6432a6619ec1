"""Settings of one LDAP directory source (`ldap:` list). Attributes left unset take the dialect's preset.

`LdapSourceSettings.resolved()` returns a `ResolvedLdap`: every attribute and filter filled in from the
dialect preset (openldap, active_directory, freeipa); `custom` has none, so its required keys must be set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from syncd.settings._base import Interval, Secret, Strict, read_secret

__all__ = [
    "DEFAULT_FULL_SCHEDULE",
    "DEFAULT_INCREMENTAL_S",
    "DIALECT_PRESETS",
    "LdapGroupsSettings",
    "LdapScheduleSettings",
    "LdapSourceSettings",
    "LdapUsersSettings",
    "ResolvedLdap",
]


#: the schedule of a source without `schedule:`: a full pull every six hours (on the hour, UTC), an incremental one
#: every five minutes; `null` turns either off
DEFAULT_FULL_SCHEDULE = "0 */6 * * *"
DEFAULT_INCREMENTAL_S = 300.0


class LdapScheduleSettings(Strict):
    """When `syncd serve` pulls the directory: `full` a cron string or an interval, `incremental` an interval.

    With content sync, `full` pulls read only what changed; `verify` (a cron string or an interval, default daily)
    is the true full pull that reads every entry and logs any difference from the change-based state as drift.
    """

    full: str | None = DEFAULT_FULL_SCHEDULE
    incremental: Interval | None = DEFAULT_INCREMENTAL_S
    verify: str | None = "24h"

    @field_validator("full", "verify")
    @classmethod
    def _cron_or_interval(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from syncd.durations import cron_problem, parse_interval

        try:
            parse_interval(value)
            return value
        except ValueError:
            pass
        problem = cron_problem(value)
        if problem is not None:
            raise ValueError(f"{value!r} is neither a cron string nor an interval ({problem})")
        return value


class LdapUsersSettings(Strict):
    """Where the people are and which attributes say what."""

    base_dn: str
    filter: str | None = None
    user_id_attribute: str | None = None
    email_attribute: str | None = None
    #: true: skip people without an email (logged and counted); false: they are provisioned without one
    require_email: bool = False
    name_attribute: str | None = None
    external_id_attribute: str | None = None
    #: entries matching this filter (and the user filter) are inactive; "" turns the preset off
    disabled_filter: str | None = None
    #: personal grant overrides (issue 9): LiteLLM field -> attribute
    override_attributes: dict[str, str] = Field(default_factory=dict)


class LdapGroupsSettings(Strict):
    """Where the groups are and how they list their members."""

    base_dn: str
    filter: str | None = None
    member_attribute: str | None = None
    name_attribute: str | None = None
    external_id_attribute: str | None = None
    #: with member_attribute memberUid: the user attribute its values name
    member_uid_attribute: str = "uid"
    nested: bool = True
    max_depth: int = Field(10, ge=1, le=100)
    #: grants kept in the directory (issue 9): LiteLLM field -> attribute
    mapping_attributes: dict[str, str] = Field(default_factory=dict)
    grant_attribute: str | None = None
    #: when set, only groups (and people) under these DNs may grant proxy_admin from the directory
    allow_admin_grants_from: list[str] = Field(default_factory=list)


class LdapSourceSettings(Strict):
    """One LDAP directory."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str | list[str]
    start_tls: bool = False
    ca_file: Path | None = None
    bind_dn: str | None = None
    bind_password: Secret = None
    bind_password_file: Path | None = None
    dialect: Literal["openldap", "active_directory", "freeipa", "custom"] = "openldap"
    page_size: int = Field(500, ge=1, le=10_000)
    connect_timeout_s: float = Field(10.0, gt=0)
    search_timeout_s: float = Field(120.0, gt=0)
    #: incremental pulls re-read changes this far before the high-water mark (replication lag, clock steps)
    incremental_overlap_s: float = Field(60.0, ge=0)
    priority: int = 0
    #: RFC 4533 content sync (OpenLDAP syncprov) for full pulls: auto (when the root DSE advertises it), on, off
    content_sync: Literal["auto", "on", "off"] = "auto"
    schedule: LdapScheduleSettings = LdapScheduleSettings()
    users: LdapUsersSettings
    groups: LdapGroupsSettings | None = None

    @field_validator("url")
    @classmethod
    def _ldap_urls(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("at least one URL is needed")
        for url in urls:
            if not url.lower().startswith(("ldap://", "ldaps://")):
                raise ValueError(f"{url!r} is not an ldap:// or ldaps:// URL")
        return value

    @model_validator(mode="after")
    def _custom_needs_attributes(self) -> LdapSourceSettings:
        if self.dialect == "custom":
            missing = _missing_for_custom(self)
            if missing:
                raise ValueError(f"dialect custom has no presets; set {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _secret_from_file(self) -> LdapSourceSettings:
        password = read_secret(self.bind_password, self.bind_password_file, "bind_password")
        object.__setattr__(self, "bind_password", password)
        return self

    @property
    def urls(self) -> list[str]:
        """The server URLs in failover order."""
        return [self.url] if isinstance(self.url, str) else list(self.url)

    def resolved(self) -> ResolvedLdap:
        """The attributes and filters to use: what the config says, else the dialect's preset."""
        return _resolve(self)


@dataclass(frozen=True, slots=True)
class ResolvedLdap:
    """Every attribute and filter of one source, presets applied; group ones are None without `groups:`."""

    user_filter: str
    user_id_attribute: str
    email_attribute: str
    name_attribute: str
    user_external_id_attribute: str
    disabled_filter: str | None
    group_filter: str | None
    member_attribute: str | None
    group_name_attribute: str | None
    group_external_id_attribute: str | None
    #: modifyTimestamp (OpenLDAP, FreeIPA) or uSNChanged (Active Directory): what incremental pulls compare
    change_attribute: str

    @property
    def member_is_uid(self) -> bool:
        """True when groups list members by user name (posixGroup memberUid) rather than by DN."""
        return (self.member_attribute or "").lower() == "memberuid"


#: dialect -> attribute presets (keys as in ResolvedLdap)
DIALECT_PRESETS: dict[str, dict[str, str]] = {
    "openldap": {
        "user_filter": "(objectClass=inetOrgPerson)",
        "user_id_attribute": "uid",
        "email_attribute": "mail",
        "name_attribute": "cn",
        "external_id_attribute": "entryUUID",
        "disabled_filter": "(pwdAccountLockedTime=*)",
        "member_attribute": "member",
        "group_name_attribute": "cn",
        "change_attribute": "modifyTimestamp",
    },
    "active_directory": {
        "user_filter": "(&(objectCategory=person)(objectClass=user))",
        "user_id_attribute": "sAMAccountName",
        "email_attribute": "mail",
        "name_attribute": "displayName",
        "external_id_attribute": "objectGUID",
        "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
        "member_attribute": "member",
        "group_filter": "(objectClass=group)",
        "group_name_attribute": "cn",
        "change_attribute": "uSNChanged",
    },
    "freeipa": {
        "user_filter": "(objectClass=inetOrgPerson)",
        "user_id_attribute": "uid",
        "email_attribute": "mail",
        "name_attribute": "cn",
        "external_id_attribute": "ipaUniqueID",
        "disabled_filter": "(nsAccountLock=TRUE)",
        "member_attribute": "member",
        "group_name_attribute": "cn",
        "change_attribute": "modifyTimestamp",
    },
    "custom": {"name_attribute": "cn", "group_name_attribute": "cn", "change_attribute": "modifyTimestamp"},
}

#: the group object class that goes with each member attribute, for the default group filter
_GROUP_CLASS = {"member": "groupOfNames", "uniquemember": "groupOfUniqueNames", "memberuid": "posixGroup"}


def _missing_for_custom(settings: LdapSourceSettings) -> list[str]:
    users = settings.users
    user_keys = ("filter", "user_id_attribute", "email_attribute", "external_id_attribute")
    missing = [f"users.{key}" for key in user_keys if getattr(users, key) is None]
    if settings.groups is not None:
        group_keys = ("filter", "member_attribute")
        missing += [f"groups.{key}" for key in group_keys if getattr(settings.groups, key) is None]
    return missing


def _resolve(settings: LdapSourceSettings) -> ResolvedLdap:
    preset = DIALECT_PRESETS[settings.dialect]
    users, groups = settings.users, settings.groups
    disabled = users.disabled_filter if users.disabled_filter is not None else preset.get("disabled_filter")
    external_id = users.external_id_attribute or preset["external_id_attribute"]
    member = group_filter = group_name = group_external_id = None
    if groups is not None:
        member = groups.member_attribute or preset["member_attribute"]
        object_class = _GROUP_CLASS.get(member.lower(), "groupOfNames")
        group_filter = groups.filter or preset.get("group_filter") or f"(objectClass={object_class})"
        group_name = groups.name_attribute or preset["group_name_attribute"]
        group_external_id = groups.external_id_attribute or external_id
    return ResolvedLdap(
        user_filter=users.filter or preset["user_filter"],
        user_id_attribute=users.user_id_attribute or preset["user_id_attribute"],
        email_attribute=users.email_attribute or preset["email_attribute"],
        name_attribute=users.name_attribute or preset["name_attribute"],
        user_external_id_attribute=external_id,
        disabled_filter=disabled or None,
        group_filter=group_filter,
        member_attribute=member,
        group_name_attribute=group_name,
        group_external_id_attribute=group_external_id,
        change_attribute=preset["change_attribute"],
    )
