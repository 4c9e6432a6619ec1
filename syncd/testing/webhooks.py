"""A webhook receiver for tests: a real HTTP server on loopback that keeps every body POSTed to it.

It answers each request with the next status of `statuses` (then 200), or holds every request open until it is
stopped (`hang=True`: a receiver that accepts connections and never answers).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["WebhookReceiver"]

_MAX_BODY = 1_048_576


class WebhookReceiver:
    """A loopback HTTP(S) server recording the webhooks it receives (start/stop, or use it as a context manager)."""

    def __init__(
        self,
        port: int = 0,
        *,
        statuses: Iterable[int] = (),
        hang: bool = False,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.requested_port, self.hang, self.cert = port, hang, cert
        self.statuses = list(statuses)
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.attempts = 0  # every request, answered or not
        self._lock = threading.Condition()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Its URL, with a path that stands for a secret (as Slack's do)."""
        scheme = "https" if self.cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hooks/T000/B000/very-secret-path-token"

    def start(self) -> WebhookReceiver:
        """Listen and serve in a background thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._received(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.requested_port), Handler)
        self._server.daemon_threads = True
        if self.cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def _received(self, request: BaseHTTPRequestHandler) -> None:
        length = min(int(request.headers.get("Content-Length") or 0), _MAX_BODY)
        body = request.rfile.read(length)
        with self._lock:
            self.attempts += 1
            self._lock.notify_all()
        if self.hang:
            self._release.wait()
            return
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
            if 200 <= status < 300:
                self.bodies.append(body)
                self.paths.append(request.path)
            self._lock.notify_all()
        request.send_response(status)
        request.send_header("Content-Length", "2")
        request.end_headers()
        request.wfile.write(b"ok")

    def events(self) -> list[dict[str, Any]]:
        """The bodies accepted so far, parsed as JSON."""
        with self._lock:
            return [json.loads(body) for body in self.bodies]

    def wait(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until `count` bodies were accepted; returns them (fewer after the timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.bodies) < count and time.monotonic() < deadline:
                self._lock.wait(max(0.01, deadline - time.monotonic()))
        return self.events()

    def stop(self) -> None:
        """Release hanging requests and stop serving."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
