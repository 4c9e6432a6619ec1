"""Fixtures of the SCIM suite: the router in an app over SQLite or PostgreSQL, a client holding a token (a static
one, or on the `sqlite-oauth` variant an OAuth access token issued to a client of the same source)."""

from __future__ import annotations

import json
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

from .oauth import OAUTH_KEY, SECRETS, oauth_section
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

    def __init__(
        self, client: TestClient, engine: Any, writes: Writes, token: str, oauth: dict[str, str] | None = None
    ) -> None:
        self.client, self.engine, self.writes = client, engine, writes
        #: static token -> an OAuth access token of the same source (the oauth variant speaks only with those)
        self.oauth = oauth or {}
        self.headers = {"Authorization": f"Bearer {self.oauth.get(token, token)}", "Content-Type": SCIM_JSON}

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
        return Scim(self.client, self.engine, self.writes, token, self.oauth)


@pytest.fixture(params=["sqlite", "sqlite-oauth", pytest.param("postgresql", marks=pytest.mark.postgres)])
def scim_backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, bool]:
    """(An empty database, whether the client speaks with OAuth access tokens): SQLite with static tokens, SQLite
    with OAuth tokens, the real PostgreSQL (a throwaway syncd_scim_* database) with static tokens."""
    if request.param.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/scim.db", request.param == "sqlite-oauth"
    return str(request.getfixturevalue("postgres").create("syncd_scim")), False


def _oauth_clients() -> dict[str, Any]:
    """One OAuth client per token's source (client_id `<source>-app`), all with the first test secret."""
    clients = [oauth_section(client_id=f"{name}-app", source=name)["oauth_clients"][0] for name in TOKENS]
    return oauth_section(clients=clients)


def _access_tokens(settings: Any) -> dict[str, str]:
    """Static token -> an access token issued (through the real client check) to the client of its source."""
    from syncd.scim.oauth import ClientRegistry

    registry = ClientRegistry(settings.scim)
    found = {name: registry.authenticate(f"{name}-app", SECRETS[0]) for name in TOKENS}
    return {TOKENS[name]: registry.issue(*pair).access_token for name, pair in found.items() if pair is not None}


def open_scim(database_url: str, *, oauth: bool = False, **scim: Any) -> Iterator[Scim]:
    """An app over `database_url` and a client speaking as okta (with an OAuth access token under `oauth`)."""
    writes = Writes()
    settings = scim_settings(database_url, TOKENS, **(_oauth_clients() if oauth else {}), **scim)
    issued = _access_tokens(settings) if oauth else {}
    assert len(issued) == len(TOKENS) if oauth else not issued
    assert not oauth or settings.scim.oauth.signing_key.get_secret_value() == OAUTH_KEY  # type: ignore[union-attr]
    app, engine = make_app(settings, on_write=writes)
    with TestClient(app, base_url="http://testserver") as client:
        yield Scim(client, engine, writes, TOKENS["okta"], issued)
    engine.dispose()


@pytest.fixture
def scim(scim_backend: tuple[str, bool]) -> Iterator[Scim]:
    """The SCIM app on SQLite (static token, then OAuth access token) and on PostgreSQL, speaking as okta."""
    url, oauth = scim_backend
    yield from open_scim(url, oauth=oauth)


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


@pytest.fixture(params=["token", "oauth"])
def syncd_served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real `syncd serve` (SCIM on, LiteLLM unreachable: reconciles fail, SCIM answers) on loopback: (its SCIM URL,
    the bearer to use): the static okta token, or an access token its /oauth/token issued to okta's OAuth client."""
    port = free_port()
    config = tmp_path / "syncd.yaml"
    scim: dict[str, Any] = {"enabled": True, "tokens": [{"name": "okta", "token": TOKENS["okta"]}]}
    if request.param == "oauth":
        scim |= oauth_section(client_id="okta-app", source="okta")
    document = {
        "database": {"url": f"sqlite:///{tmp_path}/serve.db"},
        "litellm": {"url": "http://127.0.0.1:9", "master_key": "sk-test"},
        "scim": scim,
    }
    config.write_text(json.dumps(document), encoding="utf-8")  # JSON is YAML
    command = [sys.executable, "-m", "syncd", "serve", "--config", str(config), "--migrate", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/scim/v2"
    try:
        _wait_until_up(url, process)
        bearer = TOKENS["okta"]
        if request.param == "oauth":
            form = {"grant_type": "client_credentials", "client_id": "okta-app", "client_secret": SECRETS[0]}
            answer = httpx.post(f"http://127.0.0.1:{port}/oauth/token", data=form, timeout=30)
            assert answer.status_code == 200, answer.text
            bearer = answer.json()["access_token"]
        yield url, bearer
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
