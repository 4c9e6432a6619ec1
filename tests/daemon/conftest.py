"""Fixtures of the daemon suite: `syncd serve` and the fake LiteLLM as real processes, slapd, config files."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import OUTPUT, SUFFIX, Directory, FakeLiteLLM, Slapd, Syncd


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeLiteLLM]:
    """A fake LiteLLM process."""
    server = FakeLiteLLM(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Syncd]]:
    """Start `syncd serve` processes; all are stopped at the end."""
    started: list[Syncd] = []

    def start(config: dict[str, Any], **kwargs: Any) -> Syncd:
        process = Syncd(tmp_path, config, name=f"syncd{len(started)}", **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The session's slapd (Debian's), empty but for the suffix and the reader accounts."""
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


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Where screenshots and other artefacts of this suite go: $SYNCD_TEST_OUTPUT/daemon, else build/test-output."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
