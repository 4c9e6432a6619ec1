"""Shared pieces of the settings models: strict base, interval and duration types, secrets from files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, SecretStr

from syncd.durations import budget_duration_for_litellm, parse_interval

__all__ = ["PLACEHOLDER_SECRETS", "BudgetDuration", "Interval", "Secret", "Strict", "is_placeholder", "read_secret"]


class Strict(BaseModel):
    """Every settings model: unknown keys are an error, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: seconds, written in the file as 30s, 5m, 1h, 7d
Interval = Annotated[float, BeforeValidator(parse_interval)]


def _empty_is_unset(value: object) -> object:
    """An empty secret is off, never a credential: `""` (say `${SYNCD_ADMIN_TOKEN:-}`) becomes None."""
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, SecretStr) and not value.get_secret_value().strip():
        return None
    return value


#: a secret that may be unset: None, or a non-empty SecretStr
Secret = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]
#: a budget cycle, already translated to what LiteLLM accepts
BudgetDuration = Annotated[str, AfterValidator(budget_duration_for_litellm)]


#: secrets shipped as examples (config/syncd.example.yaml, deploy/.env.example) and the usual stand-ins: never a
#: credential. Compared case-insensitively, surrounding blanks ignored.
PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "change-me-okta",
        "change-me-entra",
        "change-me-long-random",
        "sk-change-me",
        "secret",
        "token",
        "password",
        "example",
        "xxx",
        "todo",
    }
)
#: SHA-256 digests that stand for no secret: the example config's, and those of the empty string and the placeholders
_EXAMPLE_DIGESTS = frozenset({"8b1a9953c4611296a827abf8c47804d7e6c49c6b8a1b0c8e2a0c4b2b9f1d7a3e"})


def is_placeholder(secret: str) -> bool:
    """True for an empty secret, an example value or (given as a SHA-256) the digest of one: never a credential."""
    import hashlib

    text = secret.strip().lower()
    if not text or text in PLACEHOLDER_SECRETS or text in _EXAMPLE_DIGESTS:
        return True
    return any(text == hashlib.sha256(known.encode()).hexdigest() for known in ("", *PLACEHOLDER_SECRETS))


def read_secret(value: SecretStr | None, path: Path | None, what: str) -> SecretStr | None:
    """The secret given inline, or read from `path` (trailing newline stripped); never both."""
    if value is not None and path is not None:
        raise ValueError(f"give {what} or {what}_file, not both")
    if path is None:
        return value
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {what}_file {str(path)!r}: {exc.strerror}") from None
    if not secret.strip():
        raise ValueError(f"{what}_file {str(path)!r} is empty")
    return SecretStr(secret)
