"""Shared pieces of the settings models: strict base, interval and duration types, secrets from files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, SecretStr

from syncd.durations import budget_duration_for_litellm, parse_interval

__all__ = ["BudgetDuration", "Interval", "Secret", "Strict", "read_secret"]


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
