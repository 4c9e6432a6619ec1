"""The container suite's podman: the real image built from the Dockerfile, containers run from it on the host network.

Podman is driven through scripts/podman (runc, no default ulimits), as CI builds and runs it. Every container and
volume started here has a unique name and is removed by that name at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = [
    "BASE_IMAGE",
    "IMAGE",
    "PODMAN",
    "ROOT",
    "Container",
    "build_image",
    "podman",
    "podman_problem",
]

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ROOT / "scripts" / "podman"
#: the stand-in for python:3.11-slim that scripts/container-base builds (CI: .ci/run) when no registry is reachable
BASE_IMAGE = "docker.io/library/python:3.11-slim"
IMAGE = os.environ.get("SYNCD_TEST_IMAGE", "localhost/syncd:test")
#: the host's CA bundle, mounted while building only: package traffic may go through a proxy only the host trusts
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run scripts/podman with these arguments; fail with its output when it exits non-zero and `check`."""
    done = subprocess.run([str(PODMAN), *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def podman_problem() -> str | None:
    """Why podman cannot build the image here (None when it can)."""
    try:
        info = subprocess.run([str(PODMAN), "info", "--format", "json"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "podman is not installed (Debian: apt-get install podman runc; .ci/run does it)"
    except subprocess.TimeoutExpired:
        return "podman info did not answer within 60 s"
    if info.returncode != 0:
        return f"podman is unusable here: {(info.stderr.strip().splitlines() or ['?'])[-1]}"
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        return f"the base image {BASE_IMAGE} is missing: run scripts/container-base (.ci/run does)"
    return None


def build_image(tag: str = IMAGE) -> float:
    """Build the Dockerfile as it is (docker format keeps HEALTHCHECK); the seconds it took."""
    args = ["build", "--format", "docker", "--pull=never", "--network", "host", "-t", tag]
    if HOST_CA.exists():
        args += ["-v", f"{HOST_CA}:{HOST_CA}:ro"]
    started = time.monotonic()
    podman(*args, str(ROOT), timeout=900)
    return time.monotonic() - started


class Container:
    """One `syncd` container from the image: host network, read-only root, config mounted, state in a volume."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, name: str = "syncd") -> None:
        self.name = f"syncd-test-{name}-{uuid.uuid4().hex[:8]}"
        self.volume = f"{self.name}-state"
        self.port = int(config["server"]["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_dir = workdir / self.name
        self.config_dir.mkdir(mode=0o755)
        self.config_dir.chmod(0o755)  # the mount keeps the folder's mode: the container's user must enter it
        config_file = self.config_dir / "syncd.yaml"
        config_file.write_text(yaml.safe_dump(config))
        config_file.chmod(0o644)
        self.created = False

    def run(self, command: list[str] | None = None, *, env: dict[str, str] | None = None) -> float:
        """Start detached (the image's CMD on 127.0.0.1 unless `command`); the monotonic time of the start."""
        image_cmd = json.loads(podman("image", "inspect", "--format", "{{json .Config.Cmd}}", IMAGE).stdout)
        command = command or ["127.0.0.1" if arg == "0.0.0.0" else arg for arg in image_cmd]
        args = ["run", "-d", "--name", self.name, "--network", "host", "--read-only", "--read-only-tmpfs=false"]
        args += ["--tmpfs", "/tmp:rw,nosuid,nodev,size=64m", "-v", f"{self.volume}:/var/lib/syncd"]
        args += ["-v", f"{self.config_dir}:/etc/syncd:ro", "-e", f"SYNCD_HEALTH_PORT={self.port}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        started = time.monotonic()
        podman(*args, IMAGE, *command)
        self.created = True
        return started

    def inspect(self) -> dict[str, Any]:
        """`podman container inspect` of this container."""
        found = json.loads(podman("container", "inspect", self.name).stdout)
        return dict(found[0])

    def running(self) -> bool:
        """True while the container runs."""
        return bool(self.inspect()["State"]["Running"])

    def exit_code(self) -> int:
        """The exit status of its process (once it stopped)."""
        return int(self.inspect()["State"]["ExitCode"])

    def wait_exit(self, timeout: float) -> int:
        """Wait until it stopped by itself; its exit status."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still runs after {timeout} s:\n{self.logs()[-3000:]}")
            time.sleep(0.2)
        return self.exit_code()

    def logs(self) -> str:
        """What it wrote to stdout and stderr."""
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET a path of the syncd in the container."""
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def scim(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """A SCIM request with the test token (the same helper as tests/daemon's `Syncd.scim`)."""
        from _daemon import SCIM_TOKEN

        headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
        return httpx.request(method, f"{self.url}/scim/v2{path}", json=body, headers=headers, timeout=10)

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the running container (as its user)."""
        return podman("exec", self.name, *command, check=False, timeout=60)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        from _daemon import metric_value

        return metric_value(self.get("/metrics").text, name, **labels)

    def remove(self) -> None:
        """Remove the container and its state volume, by name."""
        if self.created:
            podman("rm", "--force", "--volumes", "--time", "0", self.name, check=False)
        podman("volume", "rm", "--force", self.volume, check=False)
