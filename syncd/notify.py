"""Notifications: events POSTed to webhooks from background threads, retried with backoff, never in a run's way.

Each webhook has a bounded queue and a thread of its own, so a receiver that hangs or is down delays only its own
deliveries, never a run and never another webhook. `send` only queues (a full queue drops the event, counted);
the thread POSTs it, and retries a connection error, a timeout, 408, 429 and 5xx after 1 s, 2 s, 4 s ... (at most
60 s, or the receiver's Retry-After) up to `max_attempts`; any other answer is final. Redirects are not followed,
TLS is always verified, the answer's body is never read. Sent and failed notifications are counted in
`syncd_notifications_sent_total` and `syncd_notifications_failed_total`.

A webhook URL may carry a secret in its path (Slack): logs and metrics name the webhook by its `name` or host only.
Every text of a payload is scrubbed of the registered secrets (see syncd.logs.redact) before it is sent.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from syncd import __version__
from syncd.logs import scrub
from syncd.metrics import Metrics

__all__ = ["Event", "Notifier", "payload"]

log = logging.getLogger(__name__)

_QUEUE_SIZE = 1000  # events waiting per webhook; past it new ones are dropped (and counted)
_MAX_BACKOFF_S = 60.0
_RETRIED_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Event:
    """One notification: its kind (an entry of syncd.settings.notify.EVENTS), a line for people, details for tools."""

    kind: str
    text: str
    details: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


def _scrubbed(value: Any) -> Any:
    """`value` with every registered secret removed from every text in it."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _slack_escape(text: str) -> str:
    """Slack's three control characters, escaped as its message formatting asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(event: Event, form: str) -> bytes:
    """The body sent for `event`: syncd's JSON document, or Slack's `{"text": ...}` (`form` "slack")."""
    if form == "slack":
        document: dict[str, Any] = {"text": _slack_escape(f"syncd: {event.text}")}
    else:
        at = datetime.fromtimestamp(event.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        document = {"event": event.kind, "at": at, "text": event.text, "syncd_version": __version__}
        document.update(event.details)
    return json.dumps(_scrubbed(document), default=str, ensure_ascii=False).encode()


class _Delivery(Exception):
    """An attempt that did not deliver; `retry` says whether another attempt may."""

    def __init__(self, reason: str, *, retry: bool, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry, self.wait_s = reason, retry, wait_s


class _Webhook:
    """One webhook's queue, thread and HTTP client."""

    def __init__(self, settings: Any, metrics: Metrics | None, backoff_s: float, closing: threading.Event) -> None:
        self.settings, self.metrics, self.backoff_s, self.closing = settings, metrics, backoff_s, closing
        self.label = str(settings.label)
        self.events = frozenset(settings.events)
        self.queue: queue.Queue[Event] = queue.Queue(_QUEUE_SIZE)
        self.abandon = threading.Event()  # set when closing has waited long enough: give up what is left
        verify: Any = ssl.create_default_context(cafile=str(settings.ca_file)) if settings.ca_file else True
        self.client = httpx.Client(timeout=settings.timeout_s, verify=verify, follow_redirects=False)
        self.thread = threading.Thread(target=self._loop, name=f"notify-{self.label}", daemon=True)

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            log.warning("notification %s to %s dropped: %d are waiting already", event.kind, self.label, _QUEUE_SIZE)
            self._count(event, "queue_full")

    def _loop(self) -> None:
        while True:
            try:
                event = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self.closing.is_set():
                    break
                continue
            try:
                self._deliver(event)
            except Exception as exc:  # never let the thread die: the next event still goes
                log.error("notification %s to %s failed: %s", event.kind, self.label, type(exc).__name__)
                self._count(event, "error")
            finally:
                self.queue.task_done()
        self.client.close()

    def _deliver(self, event: Event) -> None:
        body = payload(event, self.settings.format)
        attempts = int(self.settings.max_attempts)
        for attempt in range(1, attempts + 1):
            if self.abandon.is_set():
                self._count(event, "shutdown")
                return
            try:
                self._post(body)
            except _Delivery as failed:
                if not failed.retry or attempt == attempts:
                    log.warning(
                        "notification %s to %s failed after %d attempt(s): %s",
                        event.kind,
                        self.label,
                        attempt,
                        failed.reason,
                    )
                    self._count(event, failed.reason)
                    return
                delay = failed.wait_s if failed.wait_s is not None else self.backoff_s * 2 ** (attempt - 1)
                delay = min(_MAX_BACKOFF_S, delay)
                log.info("notification %s to %s: %s, retry in %.1f s", event.kind, self.label, failed.reason, delay)
                self.abandon.wait(delay)
                continue
            log.info("notification %s sent to %s", event.kind, self.label)
            if self.metrics is not None:
                self.metrics.notifications_sent.labels(self.label, event.kind).inc()
            return

    def _post(self, body: bytes) -> None:
        """One attempt; raises _Delivery unless the receiver answered 2xx (its body is never read)."""
        assert self.settings.url is not None
        headers = {"Content-Type": "application/json", "User-Agent": f"syncd/{__version__}"}
        try:
            with self.client.stream("POST", self.settings.url.get_secret_value(), content=body, headers=headers) as r:
                status, retry_after = r.status_code, r.headers.get("retry-after")
        except httpx.TimeoutException:
            raise _Delivery("timeout", retry=True) from None
        except httpx.TransportError as exc:  # its text may hold the URL: only its type is told
            raise _Delivery(f"no answer ({type(exc).__name__})", retry=True) from None
        if 200 <= status < 300:
            return
        retry = status >= 500 or status in _RETRIED_STATUSES
        raise _Delivery(f"HTTP {status}", retry=retry, wait_s=_seconds(retry_after) if status == 429 else None)

    def _count(self, event: Event, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.notifications_failed.labels(self.label, event.kind, _reason_label(reason)).inc()


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (only the delay-seconds form; a date is ignored)."""
    if retry_after is None or not retry_after.strip().isdigit():
        return None
    return float(retry_after.strip())


def _reason_label(reason: str) -> str:
    """A bounded label value for a failure reason: timeout, no_answer, http_4xx, http_5xx, queue_full, shutdown."""
    if reason.startswith("HTTP "):
        return f"http_{reason[5]}xx"
    if reason.startswith("no answer"):
        return "no_answer"
    return reason


class Notifier:
    """The webhooks of `notify:`, each with its queue and thread; `send` never blocks."""

    def __init__(self, webhooks: Sequence[Any], *, metrics: Metrics | None = None, backoff_s: float = 1.0) -> None:
        self._closing = threading.Event()
        self._webhooks = [_Webhook(w, metrics, backoff_s, self._closing) for w in webhooks if w.enabled]

    @classmethod
    def from_settings(cls, webhooks: Sequence[Any], metrics: Metrics | None = None) -> Notifier | None:
        """A started notifier for the enabled webhooks of `notify:`; None when there are none."""
        if not any(w.enabled for w in webhooks):
            return None
        notifier = cls(webhooks, metrics=metrics)
        notifier.start()
        return notifier

    @property
    def labels(self) -> list[str]:
        """The enabled webhooks, as logs and metrics name them."""
        return [w.label for w in self._webhooks]

    def wants(self, kind: str) -> bool:
        """True when some webhook asked for events of this kind."""
        return any(kind in w.events for w in self._webhooks)

    def start(self) -> None:
        """Start one delivery thread per webhook."""
        for webhook in self._webhooks:
            webhook.thread.start()

    def send(self, event: Event) -> None:
        """Queue `event` for every webhook that asked for its kind; returns at once."""
        for webhook in self._webhooks:
            if event.kind in webhook.events:
                webhook.offer(event)

    def close(self, timeout_s: float) -> int:
        """Deliver what is queued for up to `timeout_s`, then give up the rest; returns how many were left."""
        self._closing.set()
        deadline = time.monotonic() + timeout_s
        for webhook in self._webhooks:
            if webhook.thread.ident is not None:  # started
                webhook.thread.join(max(0.0, deadline - time.monotonic()))
        left = 0
        for webhook in self._webhooks:
            webhook.abandon.set()
            if webhook.thread.is_alive():
                left += webhook.queue.unfinished_tasks
        if left:
            log.warning("%d notification(s) not delivered within %.0f s: given up", left, timeout_s)
        return left
