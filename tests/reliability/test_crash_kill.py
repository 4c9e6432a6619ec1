"""`syncd sync` as a real process (`python -m syncd`) SIGKILLed at seeded random points of an apply, then rerun.

The people are recorded in process (fast); the apply under test runs in a subprocess against the fake LiteLLM served
from this process. The test polls the fake's count of answered writes and sends SIGKILL once it reaches the seeded
kill point (the fake adds a little latency so the kill lands mid-apply). A rerun must reach the same end state as an
uninterrupted run: nobody duplicated, every suspension complete with its blocked keys recorded, every reactivation
unblocking exactly the keys syncd had blocked.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _reliability import MASTER, World, end_state, figures, people, wait_for

from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FaultPlan, create_fake_litellm

BASE = 120
CI_SEEDS = range(1, 11)  # x 2 engines = 20 kill points
SLOW_SEEDS = range(100, 130)  # x 2 engines = 60 more


def _base() -> dict[str, dict[str, Any]]:
    return people(BASE)


def _phase_b() -> dict[str, dict[str, Any]]:
    return {u: {**p, "active": i % 10 != 3} for i, (u, p) in enumerate(_base().items())}


def _target() -> dict[str, dict[str, Any]]:
    """A quarter suspended, a tenth promoted, a tenth reactivated, 40 created."""
    out: dict[str, dict[str, Any]] = {}
    for i, (uid, person) in enumerate(_base().items()):
        if i % 4 == 0:
            out[uid] = {**person, "active": False}
        elif i % 10 == 2:
            out[uid] = {"groups": ["llm-admins"]}
        else:
            out[uid] = person
    return out | people(40, start=BASE)


class CrashWorld:
    """A World prepared up to the target phase, plus a config file for the CLI."""

    def __init__(self, folder: Path, database_url: str) -> None:
        self.folder = folder
        self.app = create_fake_litellm(MASTER)
        self._server = serve_in_thread(self.app)
        url = self._server.__enter__()
        self.world = World(database_url, url, self.app.state.fake)
        self.world.configure(litellm={"concurrency": 4, "max_retries": 0})
        self.world.record(_base())
        assert self.world.sync().status == "success"
        for i, uid in enumerate(_base()):
            if i % 5 == 0:
                self.world.fake.add_key(uid)
        self.world.record(_phase_b())
        assert self.world.sync().status == "success"
        self.world.record(_target())
        config = {**self.world.config, "litellm": {**self.world.config["litellm"], "master_key": "${TEST_MASTER_KEY}"}}
        (folder / "syncd.yaml").write_text(yaml.safe_dump(config))
        self.keys_before = {u: {k["token"] for k in self.fake.keys_of(u) if not k["blocked"]} for u in _target()}

    @property
    def fake(self) -> Any:
        return self.world.fake

    def start_sync(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "syncd", "sync", "--config", str(self.folder / "syncd.yaml")],
            env={"TEST_MASTER_KEY": MASTER, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.folder,
        )

    def sync(self) -> subprocess.CompletedProcess[str]:
        process = self.start_sync()
        out, err = process.communicate(timeout=120)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def close(self) -> None:
        self.world.close()
        self._server.__exit__(None, None, None)


@pytest.fixture
def crash_world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[CrashWorld] = []

    def build(engine: str) -> CrashWorld:
        folder = tmp_path / f"w{len(made)}"
        folder.mkdir()
        url = f"sqlite:///{folder}/syncd.db" if engine == "sqlite" else request.getfixturevalue("postgres").create()
        made.append(CrashWorld(folder, url))
        return made[-1]

    yield build
    for world in made:
        world.close()


_CONTROL: dict[str, tuple[dict[str, Any], int]] = {}


def _control(crash_world: Any, engine: str) -> tuple[dict[str, Any], int]:
    """The end state and number of writes of an uninterrupted `syncd sync` (once per engine)."""
    if engine not in _CONTROL:
        world = crash_world(engine)
        world.fake.reset_calls()
        done = world.sync()
        assert done.returncode == 0, done.stderr
        _CONTROL[engine] = (end_state(world.fake), world.fake.write_calls())
    return _CONTROL[engine]


def _kill_and_rerun(crash_world: Any, engine: str, seed: int) -> None:
    expected, writes = _control(crash_world, engine)
    kill_at = random.Random(f"{engine}:{seed}").randint(1, writes - 1)  # different points on each engine
    world = crash_world(engine)
    world.fake.reset_calls()
    world.fake.faults = FaultPlan(latency_s=0.01)
    process = world.start_sync()
    try:
        wait_for(lambda: world.fake.write_calls() >= kill_at or process.poll() is not None, 60, "the kill point")
        assert process.poll() is None, f"the apply ended before write {kill_at}: {process.communicate()[1][-2000:]}"
        process.kill()  # SIGKILL: no handler, no cleanup
    finally:
        process.wait(timeout=30)
    assert process.returncode == -9
    written_before_kill = world.fake.write_calls()
    world.fake.faults = FaultPlan()
    rerun = world.sync()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert world.world.sync(dry_run=True).plan.empty
    assert end_state(world.fake) == expected
    _check_suspensions(world)
    figures(
        "crash",
        engine=engine,
        seed=seed,
        kill_at_write=kill_at,
        writes_before_kill=written_before_kill,
        writes_uninterrupted=writes,
        writes_total=world.fake.write_calls(),
    )


def _check_suspensions(world: CrashWorld) -> None:
    managed = world.world.store.load_managed()
    for i, uid in enumerate(_base()):
        if i % 4 == 0:
            assert world.fake.users[uid]["metadata"]["scim_active"] is False, uid
            assert all(k["blocked"] for k in world.fake.keys_of(uid)), uid
            recorded = set(managed[uid].blocked_keys)
            # keys syncd blocked before (phase B) stay recorded; every key unblocked before this run is now recorded
            assert world.keys_before[uid] <= recorded, uid
            assert managed[uid].state == "suspended", uid
        elif i % 10 == 3:
            assert world.fake.users[uid]["metadata"]["scim_active"] is True, uid
            assert managed[uid].state == "active" and managed[uid].blocked_keys == (), uid


@pytest.mark.parametrize("seed", CI_SEEDS)
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_sigkill_mid_apply_then_rerun_reaches_the_uninterrupted_end_state(
    crash_world: Any, engine: str, seed: int
) -> None:
    _kill_and_rerun(crash_world, engine, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_sigkill_at_more_points(crash_world: Any, engine: str, seed: int) -> None:
    _kill_and_rerun(crash_world, engine, seed)
