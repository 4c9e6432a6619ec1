"""Fixtures of the daemon suite: `syncd serve` and the fake LiteLLM as real processes, slapd, config files."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import OUTPUT, FakeLiteLLM, Syncd, directory, slapd

__all__ = ["directory", "slapd"]  # the shared fixtures, registered here


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
def output_dir() -> Path:
    """Where screenshots and other artefacts of this suite go: $SYNCD_TEST_OUTPUT/daemon, else build/test-output."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
