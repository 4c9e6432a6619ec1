"""Settings of the reconcile core: database, LiteLLM, server, mappings, defaults, policy, teams."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from syncd.model import ROLES
from syncd.settings._base import BudgetDuration, Interval, Secret, Strict, is_placeholder, read_secret

__all__ = [
    "USER_REFUSED_ROLES",
    "DatabaseSettings",
    "DefaultsSettings",
    "IdentitySettings",
    "LiteLLMSettings",
    "MappingSettings",
    "PolicySettings",
    "ServerSettings",
    "TeamSettings",
]

Role = Literal["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer", "team", "customer"]
assert len(Role.__args__) == len(ROLES)  # type: ignore[attr-defined]


class DatabaseSettings(Strict):
    """Where sync state lives: SQLite (default) or PostgreSQL through postgresql+psycopg://."""

    url: str = "sqlite:///syncd.db"

    @field_validator("url")
    @classmethod
    def _known_engine(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql")):
            raise ValueError(
                f"{url.split(':', 1)[0]!r} is not a supported database (use sqlite:/// or postgresql+psycopg://)"
            )
        return url


class LiteLLMSettings(Strict):
    """The LiteLLM proxy's admin API."""

    url: str = "http://127.0.0.1:4000"
    master_key: Secret = None
    master_key_file: Path | None = None
    timeout_s: float = Field(10.0, gt=0)
    concurrency: int = Field(8, ge=1, le=64)
    drift_check: Interval = 24 * 3600.0
    max_retries: int = Field(5, ge=0, le=20)
    verify_tls: bool = True
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _secret_from_file(self) -> LiteLLMSettings:
        key = read_secret(self.master_key, self.master_key_file, "master_key")
        object.__setattr__(self, "master_key", key)
        return self


class ServerSettings(Strict):
    """The HTTP server of `syncd serve`."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    admin_token: Secret = None
    #: /readyz answers 503 when the last successful sync is older than this (unset: not checked)
    ready_max_sync_age: Interval | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    #: the request line and headers together (h11's max_incomplete_event_size): larger answers 400, connection closed
    max_header_bytes: int = Field(16_384, ge=1024, le=1_048_576)
    #: seconds a client has to send the request line and headers, and then the body; past it the connection is closed
    header_timeout_s: float = Field(10.0, gt=0, le=600)
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    #: seconds an idle keep-alive connection is kept open
    keep_alive_s: float = Field(5.0, gt=0, le=600)
    #: open connections in all; past it, the connection that has waited longest for a request head (slow or idle) is
    #: closed to make room, and only when every open one is busy with a request does a newcomer get 503
    max_connections: int = Field(1000, ge=1)
    #: open connections from one client address; past it, new ones are closed at once (0: no per-client cap)
    max_connections_per_client: int = Field(64, ge=0)
    #: requests per second one client address may make (token bucket); past it 429 with Retry-After (0: no limit)
    rate_limit_per_s: float = Field(200.0, ge=0)
    #: requests a client may make at once above the rate (the bucket's size)
    rate_limit_burst: int = Field(1000, ge=1)

    @field_validator("admin_token")
    @classmethod
    def _admin_token_set(cls, token: SecretStr | None) -> SecretStr | None:
        """An empty admin token is no token (the admin pages are off); an example value is refused."""
        if token is None or not token.get_secret_value().strip():
            return None
        if is_placeholder(token.get_secret_value()):
            raise ValueError("is an example value, not a secret: set a long random token (or leave it empty: off)")
        return token


#: roles LiteLLM's /user/new and /user/update refuse (422) for users: refused when the config loads
USER_REFUSED_ROLES = ("team", "customer")


def _role_for_users(role: str | None) -> str | None:
    if role in USER_REFUSED_ROLES:
        allowed = ", ".join(r for r in ROLES if r not in USER_REFUSED_ROLES)
        raise ValueError(f"LiteLLM refuses the role {role!r} for users (422); use one of {allowed}")
    return role


class _Grant(Strict):
    """The LiteLLM fields a mapping, the defaults or a team section can set."""

    role: Role | None = None
    models: list[str] | None = None
    tpm_limit: int | None = Field(None, ge=0, le=2**63 - 1)
    rpm_limit: int | None = Field(None, ge=0, le=2**63 - 1)
    max_budget: float | None = Field(None, ge=0, allow_inf_nan=False)
    budget_duration: BudgetDuration | None = None

    @field_validator("role")
    @classmethod
    def _role_litellm_takes(cls, role: str | None) -> str | None:
        return _role_for_users(role)


class MappingSettings(_Grant):
    """A group and what its members get in LiteLLM."""

    group: str = Field(min_length=1)
    auto_create_keys: bool | None = None
    teams: list[str] = Field(default_factory=list)
    priority: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: wins over a grant kept in the directory for the same group (issue 9)
    authoritative: bool = False
    #: the sources whose groups this mapping matches (LDAP source and SCIM token names); unset: a DN matches the
    #: groups of every LDAP source, a name the CN of LDAP groups and the displayName of SCIM groups of every source
    sources: list[str] | None = Field(None, min_length=1)


class DefaultsSettings(_Grant):
    """What a managed user gets where no mapping says otherwise."""

    role: Role = "internal_user"
    auto_create_keys: bool = False


class IdentitySettings(Strict):
    """When identities of different sources are the same person (by default never: each source owns its people)."""

    #: none: people of different sources are never merged; email: identities with the same email in the sources of
    #: merge_sources are one person, described by the source with the highest priority (ties: source name)
    merge_by: Literal["none", "email"] = "none"
    #: the sources merged with each other under merge_by: email (unset: every source)
    merge_sources: list[str] | None = Field(None, min_length=2)


class PolicySettings(Strict):
    """Who is managed, and what happens to people who leave."""

    #: deactivate: a managed person in no mapped group any more is suspended (through the deactivation guard)
    unmapped_users: Literal["ignore", "deactivate"] = "deactivate"
    deactivation: Literal["suspend", "delete"] = "suspend"
    delete_after: Interval | None = None
    max_deactivations: int = Field(50, ge=0)
    max_deactivation_ratio: float = Field(0.10, ge=0, le=1)
    #: the rolling window over which deactivations are counted across runs, against the same limits
    deactivation_window: Interval = Field(3600.0, gt=0)
    adopt_existing: bool = False
    suspended_leave_teams: bool = False


class TeamSettings(Strict):
    """A LiteLLM team syncd manages, found by alias (issue 5)."""

    alias: str = Field(min_length=1)
    models: list[str] | None = None
    max_budget: float | None = Field(None, ge=0, allow_inf_nan=False)
    budget_duration: BudgetDuration | None = None
    tpm_limit: int | None = Field(None, ge=0, le=2**63 - 1)
    rpm_limit: int | None = Field(None, ge=0, le=2**63 - 1)
    team_member_budget: float | None = Field(None, ge=0, allow_inf_nan=False)
    #: groups (name, DN or SCIM displayName) whose members join this team as team admin (LiteLLM Enterprise)
    admin_groups: list[str] = Field(default_factory=list)
    #: without an Enterprise licence LiteLLM refuses team admins: add them as plain members instead of failing
    admin_fallback_to_user: bool = False
