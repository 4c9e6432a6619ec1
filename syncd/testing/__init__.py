"""Test helpers shipped with syncd: `serve_in_thread` and the fake LiteLLM (`syncd.testing.fake_litellm`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["listening_socket", "serve_in_thread"]


def listening_socket(host: str, port: int = 0) -> socket.socket:
    """A bound TCP socket for uvicorn, with Nagle off (else each answer waits ~40 ms for a delayed ACK)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", *, startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free port in a background thread; yields its base URL."""
    import uvicorn

    sock = listening_socket(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"serve-{port}", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread, startup_timeout_s)
        yield f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_started(server: Any, thread: threading.Thread, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
