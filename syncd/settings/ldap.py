"""Settings of one LDAP directory source (`ldap:` list). Attributes left unset take the dialect's preset."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from syncd.settings._base import Interval, Strict, read_secret

__all__ = ["LdapGroupsSettings", "LdapScheduleSettings", "LdapSourceSettings", "LdapUsersSettings"]


class LdapScheduleSettings(Strict):
    """When the directory is pulled: `full` is a cron string or an interval, `incremental` an interval."""

    full: str | None = None
    incremental: Interval | None = None

    @field_validator("full")
    @classmethod
    def _cron_or_interval(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from syncd.durations import parse_interval

        try:
            parse_interval(value)
            return value
        except ValueError:
            pass
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is neither a cron string nor an interval ({exc})") from None
        return value


class LdapUsersSettings(Strict):
    """Where the people are and which attributes say what."""

    base_dn: str
    filter: str | None = None
    user_id_attribute: str | None = None
    email_attribute: str | None = None
    name_attribute: str | None = None
    external_id_attribute: str | None = None
    #: personal grant overrides (issue 9): LiteLLM field -> attribute
    override_attributes: dict[str, str] = Field(default_factory=dict)


class LdapGroupsSettings(Strict):
    """Where the groups are and how they list their members."""

    base_dn: str
    filter: str | None = None
    member_attribute: str | None = None
    name_attribute: str | None = None
    nested: bool = False
    max_depth: int = Field(10, ge=1, le=100)
    #: grants kept in the directory (issue 9): LiteLLM field -> attribute
    mapping_attributes: dict[str, str] = Field(default_factory=dict)
    grant_attribute: str | None = None


class LdapSourceSettings(Strict):
    """One LDAP directory."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str | list[str]
    start_tls: bool = False
    ca_file: Path | None = None
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    bind_password_file: Path | None = None
    dialect: Literal["openldap", "active_directory", "freeipa", "custom"] = "openldap"
    page_size: int = Field(500, ge=1, le=10_000)
    connect_timeout_s: float = Field(10.0, gt=0)
    search_timeout_s: float = Field(120.0, gt=0)
    priority: int = 0
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
    def _secret_from_file(self) -> LdapSourceSettings:
        password = read_secret(self.bind_password, self.bind_password_file, "bind_password")
        object.__setattr__(self, "bind_password", password)
        return self

    @property
    def urls(self) -> list[str]:
        """The server URLs in failover order."""
        return [self.url] if isinstance(self.url, str) else list(self.url)
