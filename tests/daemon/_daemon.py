"""Helpers of the daemon suite: `syncd serve` and the fake LiteLLM as processes, a slapd subtree, config files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ldap"))

from _slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd

__all__ = [
    "ADMIN_TOKEN",
    "MASTER_KEY",
    "OUTPUT",
    "SCIM_TOKEN",
    "SUFFIX",
    "SYNC_PASSWORD",
    "Directory",
    "FakeLiteLLM",
    "Slapd",
    "Syncd",
    "base_config",
    "free_port",
    "ldap_source",
    "oauth_token",
    "scim_engineer",
    "scim_user",
    "wait_for",
    "with_directory",
]

MASTER_KEY = "sk-daemon-test-master-key"
SCIM_TOKEN = "scim-daemon-test-token"
ADMIN_TOKEN = "admin-daemon-test-token"
OUTPUT = (
    Path(os.environ.get("SYNCD_TEST_OUTPUT") or Path(__file__).resolve().parents[2] / "build" / "test-output")
    / "daemon"
)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class FakeLiteLLM:
    """`python -m syncd.testing.fake_litellm` as a process, read through its admin API."""

    def __init__(self, tmp: Path, latency_s: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "syncd.testing.fake_litellm",
            "--port",
            str(self.port),
            "--master-key",
            MASTER_KEY,
        ]
        if latency_s:
            args += ["--latency-s", str(latency_s)]
        self.log = (tmp / f"fake-{self.port}.log").open("wb")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        wait_for(lambda: httpx.get(f"{self.url}/health/liveliness", timeout=1).status_code < 500, 15, "the fake")

    def users(self) -> dict[str, dict[str, Any]]:
        """Every user the fake holds, by user_id."""
        found: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            answer = httpx.get(
                f"{self.url}/user/list",
                params={"page": page, "page_size": 100},
                headers={"Authorization": f"Bearer {MASTER_KEY}"},
                timeout=10,
            )
            answer.raise_for_status()
            body = answer.json()
            found.update({user["user_id"]: user for user in body["users"]})
            if page >= int(body.get("total_pages") or 1):
                return found
            page += 1

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class Syncd:
    """One `syncd serve` process with its config file, port and logs."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, name: str = "syncd", args: tuple[str, ...] = ()) -> None:
        self.port = int(config["server"]["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stderr_path = tmp / f"{name}-{self.port}.log"
        self._stderr = self.stderr_path.open("wb")
        command = [sys.executable, "-m", "syncd", "serve", "--config", str(self.config_path), *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)
        #: what `scim()` sends as the bearer: the static test token, or an OAuth access token put here
        self.bearer = SCIM_TOKEN

    def wait_healthy(self, timeout: float = 20) -> None:
        """Wait until /healthz answers (fail with the logs if the process exits)."""

        def healthy() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"syncd serve exited {self.process.returncode}:\n{self.logs()[-3000:]}")
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        wait_for(healthy, timeout, "syncd serve to answer /healthz", interval=0.1)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET a path of this server."""
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def scim(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """A SCIM request with the test token (or the access token in `bearer`)."""
        headers = {"Authorization": f"Bearer {self.bearer}", "Content-Type": "application/scim+json"}
        return httpx.request(method, f"{self.url}/scim/v2{path}", json=body, headers=headers, timeout=10)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        return metric_value(self.get("/metrics").text, name, **labels)

    def signal(self, sig: int) -> None:
        """Send a signal to the process."""
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its status."""
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 30 s); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._stderr.close()
        return self.process.returncode

    def logs(self) -> str:
        """Everything it wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """Its stderr parsed as JSON events (one per line)."""
        return [json.loads(line) for line in self.logs().splitlines() if line.strip()]


def base_config(database_url: str, fake_url: str, **server: Any) -> dict[str, Any]:
    """A config: the database, the fake, SCIM with the test token, a mapping for `engineers`."""
    return {
        "database": {"url": database_url},
        "litellm": {"url": fake_url, "master_key": MASTER_KEY, "timeout_s": 5, "max_retries": 1},
        "server": {"host": "127.0.0.1", "port": free_port(), "admin_token": ADMIN_TOKEN, **server},
        "scim": {"enabled": True, "debounce_s": 0.2, "tokens": [{"name": "okta", "token": SCIM_TOKEN}]},
        "mappings": [{"group": "engineers", "role": "internal_user", "models": ["gpt-4o"]}],
    }


def oauth_token(syncd: Syncd, client_id: str, secret: str, *, basic: bool = True) -> httpx.Response:
    """POST /oauth/token for the client credentials grant, the client authenticated by HTTP Basic or by the form."""
    import base64

    form = {"grant_type": "client_credentials"}
    headers = {}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    else:
        form |= {"client_id": client_id, "client_secret": secret}
    return httpx.post(f"{syncd.url}/oauth/token", data=form, headers=headers, timeout=30)


def with_directory(config: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """`config` with the `ldap:` source `source`; its `engineers` mapping then names both the directory and the SCIM
    token (with a tenant and another source, a mapping by name must say which sources it means)."""
    config["ldap"] = [source]
    for mapping in config["mappings"]:
        if mapping["group"] == "engineers":
            mapping["sources"] = [source["name"], "okta"]
    return config


def ldap_source(server: Slapd, base: str, **schedule: Any) -> dict[str, Any]:
    """An `ldap:` entry for the test subtree `base` of the session's slapd."""
    return {
        "name": "corp",
        "url": server.url,
        "bind_dn": SYNC_DN,
        "bind_password": SYNC_PASSWORD,
        "schedule": schedule,
        "users": {"base_dn": f"ou=people,{base}"},
        "groups": {"base_dn": f"ou=groups,{base}"},
    }


class Directory:
    """A subtree of the test slapd with people and groups, changed through an admin connection."""

    def __init__(self, server: Slapd, base: str) -> None:
        import ldap3

        self.base = base
        self.conn = ldap3.Connection(server.url, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
        for ou in (base, f"ou=people,{base}", f"ou=groups,{base}"):
            assert self.conn.add(ou, ["organizationalUnit"], {"ou": ou.split(",")[0][3:]}), self.conn.result

    def add_user(self, uid: str) -> str:
        """An inetOrgPerson with mail uid@example.org; its DN."""
        dn = f"uid={uid},ou=people,{self.base}"
        attrs = {"uid": uid, "cn": uid.title(), "sn": uid, "mail": f"{uid}@example.org"}
        assert self.conn.add(dn, ["inetOrgPerson"], attrs), self.conn.result
        return dn

    def add_group(self, cn: str, members: list[str]) -> str:
        """A groupOfNames; its DN."""
        dn = f"cn={cn},ou=groups,{self.base}"
        assert self.conn.add(dn, ["groupOfNames"], {"cn": cn, "member": members}), self.conn.result
        return dn

    def add_member(self, group: str, member: str) -> None:
        """Add a member DN to a group."""
        import ldap3

        assert self.conn.modify(group, {"member": [(ldap3.MODIFY_ADD, [member])]}), self.conn.result


USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def scim_user(name: str) -> dict[str, Any]:
    """A SCIM user as Okta posts it."""
    email = f"{name}@example.org"
    return {"schemas": [USER_SCHEMA], "userName": email, "active": True, "emails": [{"value": email, "primary": True}]}


def scim_engineer(syncd: Any, name: str) -> str:
    """Create a SCIM user and put it in the SCIM group `engineers`; its user_id."""
    user = syncd.scim("POST", "/Users", scim_user(name))
    assert user.status_code == 201, user.text
    found = syncd.scim("GET", '/Groups?filter=displayName eq "engineers"').json()
    if found["totalResults"]:
        group_id = found["Resources"][0]["id"]
    else:
        group_id = syncd.scim("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "engineers"}).json()["id"]
    member = {"op": "add", "path": "members", "value": [{"value": user.json()["id"]}]}
    patch = {"schemas": [PATCH_SCHEMA], "Operations": [member]}
    assert syncd.scim("PATCH", f"/Groups/{group_id}", patch).status_code in (200, 204)
    return f"{name}@example.org"


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The session's slapd (Debian's), empty but for the suffix and the reader accounts (a conftest imports it)."""
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        pytest.skip("Debian's slapd is not installed")
    server = Slapd.create(tmp_path_factory.mktemp("slapd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def directory(slapd: Slapd, request: pytest.FixtureRequest) -> Directory:
    """A fresh subtree for this test."""
    name = "".join(c for c in request.node.name if c.isalnum())[:40]
    return Directory(slapd, f"ou={name}{time.monotonic_ns() % 100000},{SUFFIX}")
