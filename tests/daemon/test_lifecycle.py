"""Starting and stopping `syncd serve`: schema checks, readiness, SIGTERM in the middle of an apply, SQLite lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _daemon import FakeLiteLLM, base_config, wait_for
from sqlalchemy import create_engine, text

USERS = 40


def _syncd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True, text=True, timeout=60)


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _import_people(tmp_path: Path, config_path: Path) -> None:
    rows = ["user_id,email,groups"] + [f"u{i:03d},u{i:03d}@example.org,engineers" for i in range(USERS)]
    (tmp_path / "people.csv").write_text("\n".join(rows) + "\n")
    assert _syncd("db", "upgrade", "--config", str(config_path)).returncode == 0
    done = _syncd("import", str(tmp_path / "people.csv"), "--source", "hr", "--config", str(config_path))
    assert done.returncode == 0, done.stderr


def test_sigterm_mid_apply_leaves_a_consistent_journal(tmp_path: Path, launch: Any) -> None:
    slow = FakeLiteLLM(tmp_path, latency_s=0.25)
    try:
        config = base_config(f"sqlite:///{tmp_path}/syncd.db", slow.url)
        config["litellm"]["concurrency"] = 2
        _import_people(tmp_path, _write(tmp_path / "cli.yaml", config))
        syncd = launch(config)
        syncd.wait_healthy()
        wait_for(lambda: len(slow.users()) >= 4, 20, "the apply to be under way")
        stopped_at = time.monotonic()
        syncd.signal(signal.SIGTERM)
        assert syncd.wait(30) == 0
        assert time.monotonic() - stopped_at < 10
        created = set(slow.users())
        assert 4 <= len(created) < USERS, "SIGTERM was meant to land mid-apply"
        _check_journal(tmp_path / "syncd.db", created)
        assert "interrupted" in syncd.logs()

        # the next run converges, and the one after finds nothing to do
        first = _syncd("sync", "--json", "--config", str(tmp_path / "cli.yaml"))
        assert first.returncode == 0, first.stderr
        assert len(slow.users()) == USERS
        again = json.loads(_syncd("sync", "--json", "--config", str(tmp_path / "cli.yaml")).stdout)
        assert again["plan"]["changes"] == []
    finally:
        slow.stop()


def _check_journal(database: Path, created: set[str]) -> None:
    """Every change is done (and in LiteLLM) or still pending (and not started); none is half-done or running."""
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT key, status FROM changes")).all()
        runs = conn.execute(text("SELECT status FROM sync_runs")).scalars().all()
    engine.dispose()
    done = {key for key, status in rows if status == "done"}
    pending = {key for key, status in rows if status == "pending"}
    assert {status for _, status in rows} <= {"done", "pending"}
    assert done == created
    assert pending and not pending & created
    assert "running" not in runs


def test_refuses_a_schema_behind_and_readyz_says_so(tmp_path: Path, fake: Any, launch: Any) -> None:
    config = base_config(f"sqlite:///{tmp_path}/syncd.db", fake.url)
    config_path = _write(tmp_path / "cli.yaml", config)
    refused = _syncd("serve", "--config", str(config_path))
    assert refused.returncode == 2
    assert "schema is empty" in refused.stderr and "--migrate" in refused.stderr

    syncd = launch(config, args=("--migrate",))
    syncd.wait_healthy()
    assert syncd.get("/readyz").status_code == 200
    second = _syncd("serve", "--config", str(config_path))
    assert second.returncode == 2 and "single replica" in second.stderr

    engine = create_engine(f"sqlite:///{tmp_path}/syncd.db")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    answer = syncd.get("/readyz")
    assert answer.status_code == 503
    assert "schema at 0001" in answer.json()["reason"]
    assert syncd.get("/healthz").status_code == 200
    syncd.signal(signal.SIGINT)
    assert syncd.wait(30) == 0


@pytest.mark.postgres
def test_readyz_turns_503_when_the_database_goes_away(postgres: Any, fake: Any, launch: Any) -> None:
    url = postgres.create()
    syncd = launch(base_config(url, fake.url), args=("--migrate",))
    syncd.wait_healthy()
    wait_for(lambda: syncd.get("/readyz").status_code == 200, 10, "ready")
    name = url.rsplit("/", 1)[1]
    with postgres.admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    answer = wait_for(lambda: (r := syncd.get("/readyz")).status_code == 503 and r, 15, "readyz 503")
    assert answer.json()["reason"].startswith("database unreachable")
    assert syncd.get("/healthz").status_code == 200
    assert syncd.stop() == 0


def test_unreachable_database_at_start_is_a_clear_exit_2(tmp_path: Path, fake: Any) -> None:
    from _daemon import free_port

    config = base_config(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none", fake.url)
    started = time.monotonic()
    done = _syncd("serve", "--config", str(_write(tmp_path / "c.yaml", config)), "--wait-db", "2")
    assert done.returncode == 2
    assert "cannot reach the database" in done.stderr
    assert time.monotonic() - started < 20


def test_a_port_already_taken_is_a_clear_exit_2(tmp_path: Path, fake: Any) -> None:
    import socket

    config = base_config(f"sqlite:///{tmp_path}/syncd.db", fake.url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", config["server"]["port"]))
        taken.listen()
        done = _syncd("serve", "--migrate", "--config", str(_write(tmp_path / "c.yaml", config)))
    assert done.returncode == 2
    assert "could not serve HTTP on 127.0.0.1" in done.stderr
