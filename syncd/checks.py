"""`syncd check-config`: validate, then try the database, each LDAP bind and the LiteLLM key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CheckResult", "run_checks"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: what was tried, whether it worked, and what was found."""

    what: str
    ok: bool
    detail: str
    warning: bool = False


def run_checks(settings: Any) -> list[CheckResult]:
    """Every check, in order; none raises."""
    results = [CheckResult("config", True, "valid")]
    results += _mapping_scopes(settings)
    results += _token_warnings(settings)
    results += _oauth_checks(settings)
    results.append(_check_database(settings))
    results.append(_check_litellm(settings))
    results += [_check_ldap(source) for source in settings.ldap]
    results += [_check_webhook(i, webhook) for i, webhook in enumerate(settings.notify)]
    return results


def _check_webhook(index: int, webhook: Any) -> CheckResult:
    """A webhook of `notify:` as it will be used; nothing is sent (a test event would reach people)."""
    what = f"notify[{index}] ({webhook.label})"
    if not webhook.enabled:
        return CheckResult(what, True, "off: no url")
    detail = f"{webhook.format} payloads for {', '.join(webhook.events)} (nothing sent by check-config)"
    if webhook.plain_http:
        return CheckResult(what, False, f"plain http: events travel unencrypted, use https; {detail}", True)
    return CheckResult(what, True, detail)


def _mapping_scopes(settings: Any) -> list[CheckResult]:
    """What each mapping matches, in words: which sources' groups, by DN, CN or displayName."""
    from syncd.mapping import describe_match

    directories = [source.name for source in settings.ldap]
    tenants = settings.scim.source_names
    return [
        CheckResult(
            f"mappings[{i}] ({m.group})",
            True,
            "matches " + describe_match(m.group, m.sources, directories=directories, tenants=tenants),
        )
        for i, m in enumerate(settings.mappings)
    ]


def _token_warnings(settings: Any) -> list[CheckResult]:
    """Tokens shorter than 32 bytes work, but are guessable sooner than they should be."""
    found = [f"scim.tokens ({name})" for name in settings.scim.short_tokens()] if settings.scim.enabled else []
    token = settings.server.admin_token
    if token is not None and len(token.get_secret_value().encode()) < 32:
        found.append("server.admin_token")
    return [CheckResult(where, False, "shorter than 32 bytes: use a long random token", True) for where in found]


def _oauth_checks(settings: Any) -> list[CheckResult]:
    """With OAuth clients configured, whether /oauth/token can issue tokens: its signing key named when it cannot."""
    scim = settings.scim
    if not scim.enabled or not scim.oauth_clients:
        return []
    clients = ", ".join(f"{c.client_id} ({c.source})" for c in scim.oauth_clients)
    problem = scim.oauth.key_problem()
    if problem is not None:
        detail = f"{problem}: OAuth is off, /oauth/token is not served and the clients {clients} get no token"
        return [CheckResult("scim.oauth.signing_key", False, detail, True)]
    lifetime = f"{scim.oauth.token_lifetime:g} s"
    return [CheckResult("scim.oauth", True, f"POST /oauth/token issues {lifetime} tokens to {clients}")]


def _check_database(settings: Any) -> CheckResult:
    """Connect and compare the schema with the migrations; a SQLite file that does not exist is not created."""
    from syncd.store import make_engine, schema_revision, sqlite_file

    path = sqlite_file(settings.database.url)
    if path is not None and not path.exists():
        return CheckResult("database", False, f"{path} does not exist yet: run `syncd db upgrade`")
    try:
        engine = make_engine(settings.database.url)
        try:
            current, head = schema_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:
        return CheckResult("database", False, f"cannot connect: {type(exc).__name__}: {_line(exc)}")
    if current != head:
        return CheckResult("database", False, f"schema at {current or 'empty'}, needs {head}: run `syncd db upgrade`")
    return CheckResult("database", True, f"reachable, schema at {head}")


def _check_litellm(settings: Any) -> CheckResult:
    from syncd.litellm import LiteLLMClient

    if settings.litellm.master_key is None:
        return CheckResult("litellm", False, "litellm.master_key is not set")
    try:
        with LiteLLMClient.from_settings(settings.litellm, max_retries=0) as client:
            users = client.user_count()
    except Exception as exc:
        return CheckResult("litellm", False, f"{settings.litellm.url}: {_line(exc)}")
    return CheckResult("litellm", True, f"{settings.litellm.url}: key accepted, {users} users")


def _check_ldap(source: Any) -> CheckResult:
    try:
        from syncd.sources.ldap import LdapSource

        found = LdapSource(source).check()
        detail = f"{found.server}: bind ok, the user filter finds {found.users}, the group filter {found.groups}"
        return CheckResult(f"ldap {source.name}", True, "; ".join([detail, *found.warnings]))
    except Exception as exc:
        return CheckResult(f"ldap {source.name}", False, _line(exc))


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
