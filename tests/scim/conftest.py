"""Fixtures of the SCIM suite: the router in an app over SQLite or PostgreSQL, a client holding a token."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from .serve_app import make_app, scim_settings

TOKENS = {"okta": "okta-token-1", "entra": "entra-token-2"}
SCIM_JSON = "application/scim+json"


class Writes:
    """Records what on_write was told."""

    def __init__(self) -> None:
        self.calls: list[set[str]] = []
        #: called with each report, as it is made (to look at the database at that moment)
        self.watch: Callable[[set[str]], None] | None = None

    def __call__(self, user_ids: set[str]) -> None:
        self.calls.append(set(user_ids))
        if self.watch is not None:
            self.watch(set(user_ids))

    @property
    def all(self) -> set[str]:
        """Every user_id reported so far."""
        return set().union(*self.calls) if self.calls else set()


class Scim:
    """A TestClient bound to one token, with the engine and the on_write record."""

    def __init__(self, client: TestClient, engine: Any, writes: Writes, token: str) -> None:
        self.client, self.engine, self.writes = client, engine, writes
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON}

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        """Send `body` as SCIM JSON to /scim/v2`path`."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, f"/scim/v2{path}", json=body, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, body, **kwargs)

    def patch(self, path: str, *operations: dict[str, Any], **kwargs: Any) -> httpx.Response:
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": list(operations)}
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def as_token(self, token: str) -> Scim:
        """The same app, speaking with another token."""
        return Scim(self.client, self.engine, self.writes, token)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def scim_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: SQLite, then the real PostgreSQL (a throwaway syncd_scim_* database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/scim.db"
    return str(request.getfixturevalue("postgres").create("syncd_scim"))


def open_scim(database_url: str, **scim: Any) -> Iterator[Scim]:
    """An app over `database_url` and a client speaking as okta."""
    writes = Writes()
    app, engine = make_app(scim_settings(database_url, TOKENS, **scim), on_write=writes)
    with TestClient(app, base_url="http://testserver") as client:
        yield Scim(client, engine, writes, TOKENS["okta"])
    engine.dispose()


@pytest.fixture
def scim(scim_db_url: str) -> Iterator[Scim]:
    """The SCIM app on SQLite and on PostgreSQL, with the okta token."""
    yield from open_scim(scim_db_url)


@pytest.fixture
def scim_sqlite(tmp_path: Path) -> Iterator[Scim]:
    """The SCIM app on SQLite only (for the tests of pure HTTP behaviour)."""
    yield from open_scim(f"sqlite:///{tmp_path}/scim.db", max_body_bytes=4096)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(database_url: str) -> Iterator[str]:
    """The SCIM app served by uvicorn in a subprocess on loopback; yields its base URL (token okta-token-1)."""
    port = free_port()
    script = Path(__file__).with_name("serve_app.py")
    command = [sys.executable, str(script), database_url, str(port), TOKENS["okta"]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/scim/v2"
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The SCIM app served by uvicorn over SQLite."""
    with serving(f"sqlite:///{tmp_path}/served.db") as url:
        yield url


@pytest.fixture
def syncd_served(tmp_path: Path) -> Iterator[str]:
    """A real `syncd serve` (SCIM on, LiteLLM unreachable: reconciles fail, SCIM answers) on loopback."""
    port = free_port()
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"database: {{url: 'sqlite:///{tmp_path}/serve.db'}}\n"
        "litellm: {url: 'http://127.0.0.1:9', master_key: sk-test}\n"
        f"scim: {{enabled: true, tokens: [{{name: okta, token: {TOKENS['okta']}}}]}}\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "syncd", "serve", "--config", str(config), "--migrate", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/scim/v2"
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve_app exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            httpx.get(f"{url}/ServiceProviderConfig", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("serve_app did not start")
