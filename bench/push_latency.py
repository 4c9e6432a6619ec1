"""SCIM push to LiteLLM: from a SCIM response to the change landing in LiteLLM, through a real `syncd serve`.

    .venv/bin/python -m bench.push_latency [--samples 40] [--latency-ms 20]

`syncd serve` (its own process, PostgreSQL store in a throwaway database, SCIM enabled with the default debounce)
against the fake LiteLLM in its own process with `--latency-ms` added to every call. A sequential SCIM client:
(1) POST /Users, then PATCH /Groups adding the user to `engineers` (the mapped group): time from the PATCH's
response until the fake holds the user; (2) PATCH /Users `active: false` (Okta's path-less replace): time from the
response until the fake shows `metadata.scim_active: false`. The fake is polled back to back with
`/user/info?user_id=`: each poll takes the added latency, so a landing is seen at most that much late.
Target (issue 4): p95 under 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.provisioning import MASTER, fake_litellm_process
from bench.scim_bench import _free_port, _postgres_database

TOKEN = "bench-push-token"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ROOT = Path(__file__).resolve().parents[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_s": statistics.median(values),
        "p95_s": _percentile(values, 0.95),
        "max_s": max(values),
    }


def _wait_landed(litellm: httpx.Client, user_id: str, check: Any, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = litellm.get("/user/info", params={"user_id": user_id})
        if answer.status_code == 200 and check(answer.json()):
            return time.perf_counter()
    raise RuntimeError(f"{user_id}: the change did not reach LiteLLM within {timeout} s")


def _user_info(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body.get("user_info") or body)


def measure(samples: int, latency_s: float, log: Any = print) -> dict[str, Any]:
    """Start the fake and `syncd serve`, push `samples` creations and suspensions, return the latencies."""
    with (
        _postgres_database() as database,
        fake_litellm_process(latency_s) as fake_url,
        tempfile.TemporaryDirectory(prefix="syncd-bench-push-") as folder,
    ):
        port = _free_port()
        config = {
            "database": {"url": database},
            "litellm": {"url": fake_url, "master_key": MASTER},
            "server": {"host": "127.0.0.1", "port": port},
            "scim": {"enabled": True, "tokens": [{"name": "okta", "token": TOKEN}]},
            "mappings": [{"group": "engineers", "role": "internal_user", "models": ["gpt-4o"]}],
        }
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
        with (
            serve_process(config, Path(folder)) as (base, _),
            httpx.Client(base_url=f"{base}/scim/v2", headers=headers, timeout=30) as scim,
            httpx.Client(base_url=fake_url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30) as litellm,
        ):
            group = scim.post("/Groups", json={"schemas": [GROUP], "displayName": "engineers"})
            assert group.status_code == 201, group.text
            group_id = group.json()["id"]
            created, suspended = [], []
            ids: list[tuple[str, str]] = []
            for n in range(samples + 1):  # the first is a warm-up
                email = f"push{n:04d}@example.org"
                body = {"schemas": [USER], "userName": email, "active": True, "emails": [{"value": email}]}
                user = scim.post("/Users", json=body)
                assert user.status_code == 201, user.text
                add = {"op": "add", "path": "members", "value": [{"value": user.json()["id"]}]}
                answer = scim.patch(f"/Groups/{group_id}", json={"schemas": [PATCH], "Operations": [add]})
                assert answer.status_code in (200, 204), answer.text
                responded = time.perf_counter()
                landed = _wait_landed(litellm, email, lambda _body: True)
                if n:
                    created.append(landed - responded)
                ids.append((user.json()["id"], email))
            for n, (scim_id, email) in enumerate(ids):
                op = {"op": "replace", "value": {"active": False}}
                answer = scim.patch(f"/Users/{scim_id}", json={"schemas": [PATCH], "Operations": [op]})
                assert answer.status_code == 200, answer.text
                responded = time.perf_counter()

                def off(body: dict[str, Any]) -> bool:
                    return (_user_info(body).get("metadata") or {}).get("scim_active") is False

                landed = _wait_landed(litellm, email, off)
                if n:
                    suspended.append(landed - responded)
            log(f"  {samples} creations and {samples} suspensions pushed")
    return {
        "samples": samples,
        "latency_ms": latency_s * 1000,
        "create": _stats(created),
        "suspend": _stats(suspended),
        "all": _stats(created + suspended),
    }


@contextlib.contextmanager
def serve_process(config: dict[str, Any], folder: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`syncd serve --migrate` with this config (written into `folder`) until ready; yields its URL and process."""
    path = folder / "syncd.yaml"
    path.write_text(yaml.safe_dump(config))
    with (folder / "serve.log").open("wb") as errors:
        command = [sys.executable, "-m", "syncd", "serve", "--config", str(path), "--migrate"]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            base = f"http://127.0.0.1:{config['server']['port']}"
            _wait_healthy(base, process, folder / "serve.log")
            yield base, process
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"syncd serve exited {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("syncd serve did not become ready in 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    result = measure(args.samples, args.latency_ms / 1000)
    print(f"push to LiteLLM through syncd serve, {args.latency_ms:g} ms per LiteLLM call, {os.cpu_count()} cores")
    print(f"{'request':<34}{'n':>5}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for key, label in (("create", "POST /Users + PATCH /Groups add"), ("suspend", "PATCH /Users active:false")):
        row = result[key]
        print(f"{label:<34}{row['n']:>5}{row['p50_s']:>8.2f}{row['p95_s']:>8.2f}{row['max_s']:>8.2f}")


if __name__ == "__main__":
    main()
