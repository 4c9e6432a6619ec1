"""Fixtures of the container suite: the image built once per session, containers removed by name, slapd, the fake."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from _daemon import FakeLiteLLM, directory, slapd
from _podman import IMAGE, Container, build_image, podman, podman_problem

__all__ = ["directory", "slapd"]  # the shared fixtures of tests/daemon/_daemon.py, registered here


@pytest.fixture(scope="session")
def image() -> dict[str, float]:
    """The image built from the Dockerfile (cached layers reused); its build time and size in bytes."""
    problem = podman_problem()
    if problem is not None:
        pytest.skip(problem)
    build_s = build_image()
    size = float(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    return {"build_s": build_s, "size": size}


@pytest.fixture
def containers(tmp_path: Path, image: dict[str, float]) -> Iterator[Callable[..., Container]]:
    """Make containers of the image; each is removed (with its volume) at the end, its logs kept beside the test's."""
    made: list[Container] = []

    def make(config: dict[str, Any], *, name: str = "syncd") -> Container:
        container = Container(tmp_path, config, name=name)
        made.append(container)
        return container

    yield make
    for container in made:
        if container.created:
            (tmp_path / f"{container.name}.log").write_text(container.logs())
        container.remove()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeLiteLLM]:
    """A fake LiteLLM process on the host (the containers share the host's network)."""
    server = FakeLiteLLM(tmp_path)
    yield server
    server.stop()
