"""Logging: one JSON event per line (with run id and source when known), human-readable on a terminal.

Secrets registered with `redact()` (master key, bind passwords, SCIM tokens) are replaced by `***` in every message,
argument and exception text before anything is written.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "LEVELS",
    "bind_log_context",
    "configure_logging",
    "debug_enabled",
    "log_context",
    "one_line",
    "redact",
    "secrets_of",
]

#: the log levels `--log-level` and $SYNCD_LOG_LEVEL accept
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_SECRETS: set[str] = set()
#: set by `configure_logging(debug=True)` (`syncd --debug`): tracebacks are written in full only then
_DEBUG = threading.Event()
_LOCK = threading.Lock()
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def redact(*secrets: str | None) -> None:
    """Register secret values that must never be written to the logs."""
    with _LOCK:
        _SECRETS.update(s for s in secrets if s and len(s) >= 4)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def debug_enabled() -> bool:
    """True when `syncd --debug` asked for tracebacks."""
    return _DEBUG.is_set()


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, secrets scrubbed: how an exception is told without --debug."""
    first = (str(exc).strip().splitlines() or [""])[0][:500]
    return scrub(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def secrets_of(settings: Any) -> list[str]:
    """Every secret value of a loaded Settings."""
    found: list[str] = []
    candidates = [settings.litellm.master_key, settings.server.admin_token]
    candidates += [source.bind_password for source in settings.ldap]
    candidates += [token.token for token in settings.scim.tokens]
    candidates += [webhook.url for webhook in settings.notify]  # a webhook URL may carry a secret in its path
    candidates.append(settings.scim.oauth.signing_key)
    for value in candidates:
        if value is not None:
            found.append(value.get_secret_value())
    try:
        password = urlsplit(settings.database.url).password  # an error text may quote the URL
    except ValueError:
        password = None
    if password:
        found.extend({password, unquote(password)})
    return found


_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("syncd_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (run id, source, trigger) to every event logged by this thread inside the block."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add `fields` to the current log context (until the enclosing `log_context` block ends)."""
    _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_CONTEXT.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            if _DEBUG.is_set():
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            else:  # one line per event: the exception's type and first line, the traceback only with --debug
                record.msg = f"{record.msg}: {one_line(record.exc_info[1])}"
            record.exc_info = None
        elif record.exc_text and not _DEBUG.is_set():
            record.exc_text = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_text:
            event["exception"] = record.exc_text
        return scrub(json.dumps(event, default=str))


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        tail = " ".join(f"{k}={v}" for k, v in extra.items())
        text = f"{record.levelname.lower():7} {record.getMessage()}" + (f"  [{tail}]" if tail else "")
        if record.exc_text:
            text += "\n" + record.exc_text
        return scrub(text)


def configure_logging(level: str = "INFO", *, json_format: bool | None = None, debug: bool = False) -> None:
    """Send logs to stderr: JSON unless stderr is a terminal (or as `json_format` or $SYNCD_LOG_FORMAT says).

    Every event is one line; with `debug` (`syncd --debug`) exceptions are followed by their traceback.
    """
    if debug:
        _DEBUG.set()
    else:
        _DEBUG.clear()
    if json_format is None and os.environ.get("SYNCD_LOG_FORMAT", "").lower() in ("json", "text"):
        json_format = os.environ["SYNCD_LOG_FORMAT"].lower() == "json"
    use_json = not sys.stderr.isatty() if json_format is None else json_format
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redacting())
    handler.setFormatter(_JsonFormatter() if use_json else _HumanFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler", "ldap3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
