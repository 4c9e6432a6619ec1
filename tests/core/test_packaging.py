"""The wheel: it carries its migrations, installs without a PostgreSQL or LDAP driver, and names the extra it lacks.

The wheel is built from a copy of the checkout, installed into a fresh virtualenv (its dependencies from the package
index, or pip's cache), and run from another folder with nothing of the checkout in reach: no SYNCD_MIGRATIONS, no
PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from syncd.store.db import SCHEMA_HEAD
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

ROOT = Path(__file__).resolve().parents[2]
MASTER = "sk-wheel-master-19c2"


def test_every_package_folder_is_in_the_wheel_list() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "syncd").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk - {"syncd.testing"} <= listed, on_disk - listed
    assert {"syncd.migrations", "syncd.migrations.versions"} <= listed and "syncd.testing" not in listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout, and only its required dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "syncd", src / "syncd", ignore=ignore)
    shutil.copytree(ROOT / "migrations", src / "migrations", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(src)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("syncd-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


@pytest.fixture
def fake_url() -> Iterator[str]:
    with serve_in_thread(create_fake_litellm(MASTER)) as url:
        yield url


def _run(venv: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command of the installed syncd, from `folder`, with none of the checkout's environment."""
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "LITELLM_MASTER_KEY": MASTER, "HOME": str(folder)}
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=folder, timeout=120)


def test_the_installed_wheel_upgrades_the_database_and_checks_the_config(
    installed: Path, tmp_path: Path, fake_url: str
) -> None:
    assert "SYNCD_MIGRATIONS" not in os.environ
    where = _run(installed, tmp_path, "python", "-c", "import syncd.store.db as d; print(d.migrations_dir())")
    assert where.stdout.strip().startswith(str(installed)), where.stdout + where.stderr
    drivers = _run(installed, tmp_path, "python", "-c", "import importlib.util as u; print(u.find_spec('psycopg'))")
    assert drivers.stdout.strip() == "None", "a SQLite-only install pulled a PostgreSQL driver"
    config = {"database": {"url": "sqlite:///syncd.db"}, "litellm": {"url": fake_url}}
    config["litellm"]["master_key"] = "${LITELLM_MASTER_KEY}"
    (tmp_path / "syncd.yaml").write_text(yaml.safe_dump(config))

    upgraded = _run(installed, tmp_path, "syncd", "db", "upgrade", "--config", "syncd.yaml")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database schema: empty -> {SCHEMA_HEAD}" in upgraded.stdout
    checked = _run(installed, tmp_path, "syncd", "check-config", "--config", "syncd.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"ok    database: reachable, schema at {SCHEMA_HEAD}" in checked.stdout and "config OK" in checked.stdout
    imported = tmp_path / "people.json"
    imported.write_text(json.dumps({"users": [{"user_id": "ann", "email": "ann@example.com"}], "groups": []}))
    assert _run(installed, tmp_path, "syncd", "import", str(imported), "--config", "syncd.yaml").returncode == 0


def test_the_installed_wheel_names_the_extra_it_lacks(installed: Path, tmp_path: Path) -> None:
    postgres = {"database": {"url": "postgresql+psycopg://syncd@127.0.0.1:5432/syncd"}}
    (tmp_path / "pg.yaml").write_text(yaml.safe_dump(postgres))
    done = _run(installed, tmp_path, "syncd", "db", "upgrade", "--config", "pg.yaml")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "syncd: database.url is PostgreSQL but its driver (psycopg) is not installed: pip install 'syncd[postgres]'"
    ]
    ldap = {
        "litellm": {"master_key": "${LITELLM_MASTER_KEY}"},
        "ldap": [{"name": "corp", "url": "ldap://127.0.0.1:1", "users": {"base_dn": "o=x"}}],
    }
    (tmp_path / "ldap.yaml").write_text(yaml.safe_dump(ldap))
    done = _run(installed, tmp_path, "syncd", "sync", "--config", "ldap.yaml")
    assert done.returncode == 2 and "pip install 'syncd[ldap]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
