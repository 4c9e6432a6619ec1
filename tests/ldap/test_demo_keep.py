"""`scripts/demo --keep` leaves a usable folder: the secrets in demo.env (mode 600) and a `start` script that brings
back its slapd and fake LiteLLM on the same ports with the same secrets, so syncd runs there again; `stop` stops them.
"""

from __future__ import annotations

import importlib.util
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from _slapd import SYNC_PASSWORD, Slapd

ROOT = Path(__file__).resolve().parents[2]


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("syncd_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[tuple[Path, Slapd, str]]:
    """What the demo leaves behind with --keep: its folder, its (stopped) slapd and the fake's URL."""
    demo = _demo()
    folder = tmp_path / "demo"
    folder.mkdir()
    slapd = Slapd.create(folder / "ldap")
    slapd.load(ROOT / "examples" / "directory.ldif")
    url = f"http://127.0.0.1:{demo.free_port()}"
    (folder / "syncd.yaml").write_text(demo.config(folder, slapd, url))
    demo.keep_folder(folder, slapd, url)
    yield folder, slapd, url
    subprocess.run([str(folder / "stop")], timeout=30, check=False)


def test_the_kept_folder_restarts_its_services_with_the_same_secrets(kept: tuple[Path, Slapd, str]) -> None:
    folder, slapd, url = kept
    env_file = folder / "demo.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"LDAP_BIND_PASSWORD={SYNC_PASSWORD}" in env_file.read_text()
    started = subprocess.run([str(folder / "start")], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f". {env_file}" in started.stdout
    assert _listening(slapd.port) and httpx.get(f"{url}/health", timeout=5).status_code in (200, 401)  # it answers
    script = (
        f". {env_file} && {Path(sys.executable).parent}/syncd db upgrade && {Path(sys.executable).parent}/syncd sync"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "SYNCD_LOG_FORMAT": "text"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Applied: 6 create" in done.stdout  # nomail too: people without an email are provisioned
    stopped = subprocess.run([str(folder / "stop")], capture_output=True, text=True, timeout=30)
    assert stopped.returncode == 0
    for _ in range(50):
        if not _listening(slapd.port) and not _listening(int(url.rsplit(":", 1)[1])):
            break
        time.sleep(0.1)
    assert not _listening(slapd.port) and not _listening(int(url.rsplit(":", 1)[1]))
