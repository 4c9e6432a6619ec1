"""The real image, built from the Dockerfile with podman and run: lean, pinned, non-root, read-only root filesystem,
probed, pulling from a slapd on the host, taking SCIM writes, stopping cleanly and handing over leadership."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from _daemon import OUTPUT, base_config, ldap_source, scim_engineer, wait_for, with_directory
from _podman import BASE_IMAGE, IMAGE, ROOT, Container, podman
from packaging.markers import Marker
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]  # the first test builds the image

MB = 1_000_000
#: what the Dockerfile may add to python:3.11-slim (the dependencies, syncd and their bytecode measured ~100 MB)
ADDED_BUDGET_MB = 125
#: the whole image on the stand-in base (130 MB here, like python:3.11-slim)
SIZE_BUDGET_MB = 270
#: the image's own stop grace in deploy/ (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds)
GRACE_S = 40
FIGURES = OUTPUT.parent / "container" / "figures.json"

# What the image holds, read by its own Python: the installed distributions, the marker environment, and anything a
# lean runtime image should not carry.
_SURVEY = r"""
import glob, importlib.metadata as md, json, os, platform, shutil, sys
v = sys.implementation.version
print(json.dumps({
    "dists": sorted({(d.metadata["Name"], d.version) for d in md.distributions()}),
    "env": {"implementation_name": sys.implementation.name, "os_name": os.name,
            "implementation_version": f"{v.major}.{v.minor}.{v.micro}",
            "platform_machine": platform.machine(), "platform_python_implementation": platform.python_implementation(),
            "platform_release": platform.release(), "platform_system": platform.system(),
            "platform_version": platform.version(), "python_full_version": platform.python_version(),
            "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform},
    "compilers": [c for c in ("gcc", "cc", "c++", "clang", "make", "ld") if shutil.which(c)],
    "pip_in_runtime": bool(glob.glob("/opt/syncd/lib/python3*/site-packages/pip")),
    "test_code": glob.glob("/opt/syncd/lib/python3*/site-packages/syncd/testing")
                 + glob.glob("/opt/syncd/lib/python3*/site-packages/tests")
                 + glob.glob("/opt/syncd/lib/python3*/site-packages/_pytest"),
    "caches": [p for p in ("/root/.cache", "/var/lib/syncd/.cache", "/tmp/pip", "/src", "/wheels", "/build")
               if os.path.exists(p)],
    "bytecode": len(glob.glob("/opt/syncd/lib/python3*/site-packages/syncd/**/*.pyc", recursive=True)),
    "migrations": sorted(os.path.basename(p) for p in glob.glob("/opt/syncd/migrations/versions/*.py")),
}))
"""


def _record(**figures: float) -> None:
    """Keep the measured figures (BENCHMARKS.md quotes them) in build/test-output/container/figures.json."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps(known | {k: round(v, 2) for k, v in figures.items()}, indent=2) + "\n")


def _locked(path: Path) -> dict[str, tuple[str, str | None]]:
    """The lock file's pins: name -> (version, marker or None)."""
    pins: dict[str, tuple[str, str | None]] = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if found:
            pins[canonicalize_name(found[1])] = (found[2], found[3])
    return pins


def test_image_is_lean_pinned_and_non_root(image: dict[str, float]) -> None:
    inspected = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["syncd"] and config["Cmd"][0] == "serve" and "--migrate" in config["Cmd"]
    healthcheck = " ".join((inspected.get("Healthcheck") or {}).get("Test", []))
    assert "/healthz" in healthcheck, "HEALTHCHECK lost (build with --format docker)"
    assert "8080/tcp" in config["ExposedPorts"]

    base = float(podman("image", "inspect", "--format", "{{.Size}}", BASE_IMAGE).stdout)
    added = image["size"] - base
    _record(image_mb=image["size"] / MB, added_mb=added / MB, base_mb=base / MB, build_s=image["build_s"])
    assert added <= ADDED_BUDGET_MB * MB, f"the image adds {added / MB:.0f} MB to its base (budget {ADDED_BUDGET_MB})"
    assert image["size"] <= SIZE_BUDGET_MB * MB, f"the image is {image['size'] / MB:.0f} MB (budget {SIZE_BUDGET_MB})"

    surveyed = podman("run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", _SURVEY)
    survey = json.loads(surveyed.stdout)
    assert survey["compilers"] == [] and survey["test_code"] == [] and survey["caches"] == []
    assert not survey["pip_in_runtime"], "pip belongs to the builder stage, not /opt/syncd"
    assert survey["bytecode"] > 10, "bytecode is compiled at build time (a read-only root cannot cache it)"
    shipped = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert survey["migrations"] == shipped

    # exactly the lock's pins that apply on this platform, plus syncd itself: nothing unpinned, nothing missing
    wanted = {
        name: version
        for name, (version, marker) in _locked(ROOT / "requirements.lock").items()
        if marker is None or Marker(marker).evaluate(survey["env"])
    }
    installed = {canonicalize_name(name): version for name, version in survey["dists"]}
    assert installed.pop("syncd", None) is not None
    assert installed == wanted


def _ready(container: Container) -> bool:
    if not container.running():
        pytest.fail(f"{container.name} exited {container.exit_code()}:\n{container.logs()[-3000:]}")
    return container.get("/readyz").status_code == 200


def test_read_only_container_on_sqlite_pulls_ldap_takes_scim_and_stops_cleanly(
    containers: Any, fake: Any, slapd: Any, directory: Any
) -> None:
    group = directory.add_group("engineers", [directory.add_user("alice")])
    config = base_config("sqlite:////var/lib/syncd/syncd.db", fake.url)
    with_directory(config, ldap_source(slapd, directory.base, full="1h", incremental="2s"))
    syncd = containers(config)
    started = syncd.run()
    wait_for(lambda: _ready(syncd), 60, "the container's /readyz to answer 200", interval=0.05)
    _record(start_to_ready_s=time.monotonic() - started)

    # the daemon runs as the image's user, and the image's own HEALTHCHECK passes
    status = syncd.exec("cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\s+10001\s+10001\s", status, re.M), status
    assert podman("healthcheck", "run", syncd.name, check=False).returncode == 0

    # the scheduled pulls from the slapd on the host reach the fake LiteLLM: the first full one at once, then a change
    wait_for(lambda: "alice" in fake.users(), 30, "alice in LiteLLM after the first full pull")
    assert fake.users()["alice"]["models"] == ["gpt-4o"]
    directory.add_member(group, directory.add_user("bob"))
    wait_for(lambda: "bob" in fake.users(), 30, "bob in LiteLLM after an incremental pull")

    # a SCIM push to the container reaches LiteLLM
    carol = scim_engineer(syncd, "carol")
    wait_for(lambda: carol in fake.users(), 15, "the SCIM user in LiteLLM")

    peak_kib = re.search(r"^VmHWM:\s+(\d+) kB", syncd.exec("cat", "/proc/1/status").stdout, re.M)
    assert peak_kib is not None
    _record(peak_rss_mb=int(peak_kib[1]) * 1024 / MB)

    # read-only root: the state is in the volume, nothing else is writable
    assert syncd.exec("touch", "/opt/syncd/written").returncode != 0
    assert syncd.exec("touch", "/var/lib/syncd/probe", "/tmp/probe").returncode == 0
    assert "syncd.db" in syncd.exec("ls", "/var/lib/syncd").stdout
    assert syncd.inspect()["HostConfig"]["ReadonlyRootfs"] is True

    # the SQLite backup of deploy/README.md, run in the container as written there, gives a complete copy
    backup = _readme_backup_command()
    assert syncd.exec("python", "-c", backup).returncode == 0
    count = "import sqlite3; db = sqlite3.connect('/var/lib/syncd/backup.db')\n"
    count += "print(db.execute('SELECT count(*) FROM managed_users').fetchone()[0])"
    assert syncd.exec("python", "-c", count).stdout.strip() == "3"

    # SIGTERM (podman stop): the daemon finishes what is in flight and exits 0 well within the grace period
    stopping = time.monotonic()
    podman("stop", "--time", str(GRACE_S), syncd.name, timeout=GRACE_S + 30)
    stop_s = time.monotonic() - stopping
    _record(stop_s=stop_s)
    assert syncd.exit_code() == 0, syncd.logs()[-3000:]
    assert stop_s < GRACE_S - 5, f"podman stop took {stop_s:.1f} s: SIGKILL after the grace period?"
    assert "syncd serve stopped" in syncd.logs()


def _readme_backup_command() -> str:
    """The Python of the SQLite online backup that deploy/README.md tells operators to run in the container."""
    text = (ROOT / "deploy" / "README.md").read_text()
    found = re.search(r'python -c "([^"]*src\.backup\([^"]*)"', text)
    assert found, "deploy/README.md lost its SQLite backup command"
    return found[1]


def _downgrade_one_step(url: str) -> None:
    """Take the database one migration back, as a backup restored from the previous release would be."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.downgrade(config, "-1")


def _leader(replicas: list[Container]) -> Container | None:
    leaders = [r for r in replicas if r.running() and r.metric("syncd_leader") == 1]
    return leaders[0] if len(leaders) == 1 else None


@pytest.mark.postgres
def test_containers_on_postgres_migrate_and_a_survivor_takes_the_lead(
    containers: Any, postgres: Any, fake: Any, slapd: Any, directory: Any
) -> None:
    group = directory.add_group("engineers", [directory.add_user("dave")])
    url = postgres.create()
    config = base_config(url, fake.url)
    with_directory(config, ldap_source(slapd, directory.base, full="2s"))

    # without --migrate, an empty database is refused at start with what to do (exit 2)
    unmigrated = containers(config, name="unmigrated")
    unmigrated.run(["serve", "--config", "/etc/syncd/syncd.yaml", "--host", "127.0.0.1", "--wait-db", "5"])
    assert unmigrated.wait_exit(60) == 2
    assert "--migrate" in unmigrated.logs()

    # the image's command migrates at start: ready; a schema one migration behind: 503 naming it; a restart: 200
    first = containers(config, name="first")
    first.run()
    wait_for(lambda: _ready(first), 60, "the first container ready after --migrate")
    _downgrade_one_step(url)
    unready = first.get("/readyz")
    assert unready.status_code == 503 and "needs" in unready.json()["reason"], unready.text
    podman("restart", "--time", str(GRACE_S), first.name, timeout=GRACE_S + 30)
    wait_for(lambda: _ready(first), 60, "the restarted container ready after --migrate")

    # a second replica on the same PostgreSQL: exactly one leads, and its scheduled pull reaches LiteLLM
    config["server"]["port"] += 1
    second = containers(config, name="second")
    second.run()
    wait_for(lambda: _ready(second), 60, "the second container ready")
    leader = wait_for(lambda: _leader([first, second]), 20, "exactly one leader")
    survivor = second if leader is first else first
    wait_for(lambda: "dave" in fake.users(), 30, "the leader's scheduled pull in LiteLLM")

    # the leader is killed outright: the survivor takes the lead and pulls on schedule
    killed = time.monotonic()
    podman("kill", "--signal", "KILL", leader.name)
    wait_for(lambda: survivor.metric("syncd_leader") == 1, 30, "the survivor to take the lead")
    _record(takeover_s=time.monotonic() - killed)
    directory.add_member(group, directory.add_user("frank"))
    wait_for(lambda: "frank" in fake.users(), 30, "a directory change through the new leader")
