"""Settings of the notifications (`notify:`): webhooks, each with the events it wants and its payload format.

A webhook URL often carries a secret in its path (Slack, Teams, Mattermost): it is a `SecretStr`, and nothing but
its host is ever written in an error message or a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from syncd.settings._base import Strict, is_placeholder

__all__ = ["EVENTS", "EventName", "WebhookSettings", "webhook_host"]

EventName = Literal["held_plan", "conflict", "run_failed", "recovered", "drift_corrected"]
#: every event a webhook may ask for
EVENTS: tuple[EventName, ...] = ("held_plan", "conflict", "run_failed", "recovered", "drift_corrected")


def webhook_host(url: str) -> str:
    """The host (and port, when given) of a webhook URL: all of it that may be logged."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _checked_url(value: Any) -> SecretStr | None:
    """The URL as a secret; empty or an example value: None (the webhook is off). The message never holds it."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("must be a URL (text)")
    text = text.strip()
    if not text or is_placeholder(text):
        return None
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        scheme = repr(parts.scheme) if parts.scheme and len(parts.scheme) <= 10 else "none"
        raise ValueError(f"must be an http:// or https:// URL (the scheme is {scheme})")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError:
        raise ValueError(f"the port of host {parts.hostname} is not a number in 0..65535") from None
    return SecretStr(text)


class WebhookSettings(Strict):
    """One webhook: where events go, which events, in which format."""

    #: http(s) URL; empty (say `${SLACK_WEBHOOK_URL:-}`) or an example value: this webhook is off
    url: SecretStr | None = None
    #: what the metrics and logs call it (default: the URL's host)
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    events: list[EventName] = Field(default_factory=lambda: list(EVENTS))
    #: json: syncd's event document; slack: `{"text": ...}` (Slack, Mattermost, Rocket.Chat incoming webhooks)
    format: Literal["json", "slack"] = "json"
    #: seconds one attempt may take (connect, send, answer)
    timeout_s: float = Field(5.0, gt=0, le=60)
    #: attempts per notification; between them 1 s, 2 s, 4 s ... (at most 60 s)
    max_attempts: int = Field(8, ge=1, le=20)
    #: PEM bundle for an https receiver with a private CA; certificates are always verified
    ca_file: Path | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> SecretStr | None:
        return _checked_url(value)

    @field_validator("events")
    @classmethod
    def _some_events(cls, events: list[str]) -> list[str]:
        if not events:
            raise ValueError(f"names no event (leave the key out for all of them: {', '.join(EVENTS)})")
        return events

    @model_validator(mode="after")
    def _ca_file_readable(self) -> WebhookSettings:
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"ca_file {str(self.ca_file)!r} is not a readable file")
        return self

    @property
    def enabled(self) -> bool:
        """False when the URL is empty or an example value."""
        return self.url is not None

    @property
    def plain_http(self) -> bool:
        """True when events would travel unencrypted to another host than this one (worth a warning)."""
        url = self.url.get_secret_value() if self.url is not None else ""
        host = urlsplit(url).hostname or ""
        return url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1")

    @property
    def label(self) -> str:
        """The webhook's name in metrics and logs: `name`, else the URL's host."""
        if self.name:
            return self.name
        return webhook_host(self.url.get_secret_value()) if self.url is not None else "off"
