"""The image's lock files against pyproject.toml: every runtime dependency (and extra) pinned, within its bounds,
with hashes; the build backend pinned too. Regenerate with `make lock` when this fails."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: the image's Python (python:3.11-slim on Linux): the markers of the lock are evaluated for it
IMAGE_ENV = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux"}
IMAGE_ENV |= {"platform_system": "Linux", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
IMAGE_ENV |= {"os_name": "posix", "platform_machine": "x86_64"}


def _pins(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of a `uv pip compile --generate-hashes` output."""
    pins: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line)
        if pinned:
            name = canonicalize_name(pinned[1])
            pins[name] = (Version(pinned[2]), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            pins[name] = (pins[name][0], pins[name][1] + 1)
    return pins


def _assert_covered(requirements: list[str], pins: dict[str, tuple[Version, int]], where: str) -> None:
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(IMAGE_ENV):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} ({where}) is not in the lock: run `make lock`"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, outside {requirement} ({where}): run `make lock`"
        )
        assert hashes >= 1, f"{name} has no hash in the lock"


def test_lock_pins_every_runtime_dependency_within_pyproject_bounds() -> None:
    pins = _pins(ROOT / "requirements.lock")
    # the image serves LDAP sources and PostgreSQL too: the ldap and postgres extras are runtime dependencies there
    extras = PYPROJECT["project"]["optional-dependencies"]
    dependencies = [*PYPROJECT["project"]["dependencies"], *extras["ldap"], *extras["postgres"]]
    _assert_covered(dependencies, pins, "pyproject dependencies")
    # the extras asked for (uvicorn[standard], psycopg[binary]), as the installed distribution declares them
    for text in dependencies:
        requirement = Requirement(text)
        for extra in requirement.extras:
            declared = [Requirement(r) for r in importlib.metadata.requires(requirement.name) or []]
            wanted = [r for r in declared if r.marker is not None and r.marker.evaluate(IMAGE_ENV | {"extra": extra})]
            assert wanted, f"{requirement.name} declares no extra {extra!r}"
            _assert_covered([r.name for r in wanted], pins, f"{requirement.name}[{extra}]")


def test_lock_holds_no_test_or_dev_tool() -> None:
    pins = _pins(ROOT / "requirements.lock")
    for text in PYPROJECT["project"]["optional-dependencies"]["test"]:
        name = canonicalize_name(Requirement(text).name)
        runtime = {canonicalize_name(Requirement(d).name) for d in PYPROJECT["project"]["dependencies"]}
        assert name in runtime | {"syncd"} or name not in pins, f"the test tool {name} is in the image's lock"


def test_build_lock_pins_the_build_backend() -> None:
    _assert_covered(PYPROJECT["build-system"]["requires"], _pins(ROOT / "requirements-build.lock"), "build-system")
