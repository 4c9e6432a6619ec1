"""The python-scim compliance suite (scim2-tester, through the scim2-cli `test` command) against a real server.

Once with the SCIM router alone under uvicorn, then with a real `syncd serve` process twice: with the static token,
and with an OAuth access token from that process's /oauth/token (issue 17). Every check must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TOKENS


def _scim2_cli() -> str | None:
    beside = Path(sys.executable).with_name("scim2")
    return str(beside) if beside.exists() else shutil.which("scim2")


def test_scim2_tester_passes_every_check(served: str) -> None:
    _every_check_passes(served, TOKENS["okta"])


def test_scim2_tester_passes_every_check_against_syncd_serve(syncd_served: tuple[str, str]) -> None:
    _every_check_passes(*syncd_served)


def _every_check_passes(served: str, bearer: str) -> None:
    cli = _scim2_cli()
    if cli is None:
        pytest.skip("scim2-cli is not installed (pip install scim2-cli)")
    environment = {**os.environ, "SCIM_CLI_HEADERS": f"Authorization: Bearer {bearer}"}
    run = subprocess.run([cli, "--url", served, "test"], capture_output=True, text=True, env=environment, timeout=240)
    report = run.stdout + run.stderr
    results = [line for line in report.splitlines() if line.split(" ", 1)[0] in ("SUCCESS", "ERROR", "SKIPPED")]
    failed = [line for line in results if not line.startswith("SUCCESS")]
    assert run.returncode == 0 and not failed, report[-4000:]
    assert len(results) >= 120, report[-2000:]
