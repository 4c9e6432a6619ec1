"""LiteLLM misbehaving during a large apply: random 500/502/429, timeouts, writes that commit but answer 502, and a
full outage flipped on from another thread in the middle. syncd is rerun until it converges; the result must equal an
uninterrupted run's, with every change applied exactly once (audit log), no duplicate user, every suspension complete
(scim_active false and every key blocked, the blocked keys recorded) and unmanaged users untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _reliability import MASTER, FaultyProxy, World, end_state, figures, flip_outage_after, people

from syncd.litellm import LiteLLMClient
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, FaultPlan, create_fake_litellm

FOREIGN = 10  # LiteLLM users syncd does not manage


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Any]:
    """Builds worlds (a fake LiteLLM served over HTTP and a store) that are torn down at the end."""
    stack: list[tuple[Any, World]] = []

    def build(database_url: str | None = None, **client: Any) -> World:
        app = create_fake_litellm(MASTER)
        server = serve_in_thread(app)
        url = server.__enter__()
        db = database_url or f"sqlite:///{tmp_path}/w{len(stack)}.db"
        world = World(db, url, app.state.fake, **client)
        stack.append((server, world))
        return world

    yield build
    for server, world in reversed(stack):
        world.close()
        server.__exit__(None, None, None)


class Scenario:
    """A directory of `n` people taken through four phases; `target` is the phase applied under faults."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.base = people(n)
        self.suspended_first = {u for i, u in enumerate(self.base) if i % 10 == 3}
        self.to_suspend = {u for i, u in enumerate(self.base) if i % 10 in (0, 1)}
        self.to_update = {u for i, u in enumerate(self.base) if i % 10 == 2}
        self.new = set(people(n // 2, start=n))

    def phase_b(self) -> dict[str, dict[str, Any]]:
        """A tenth of the people disabled."""
        return {u: {**p, "active": u not in self.suspended_first} for u, p in self.base.items()}

    def target(self) -> dict[str, dict[str, Any]]:
        """Suspend a fifth (half disabled, half gone), promote a tenth, reactivate a tenth, create n/2."""
        out: dict[str, dict[str, Any]] = {}
        for i, (uid, person) in enumerate(self.base.items()):
            if i % 10 == 1:
                continue  # gone from the directory
            if i % 10 == 0:
                out[uid] = {**person, "active": False}
            elif i % 10 == 2:
                out[uid] = {"groups": ["llm-admins", "llm-power"]}
            else:
                out[uid] = person
        return out | people(self.n // 2, start=self.n)

    def revert(self) -> dict[str, dict[str, Any]]:
        """The promoted people demoted again (a change that must not be lost after a write answered 502)."""
        target = self.target()
        return {u: (self.base[u] if u in self.to_update else p) for u, p in target.items()}

    def prepare(self, world: World) -> None:
        """Phases A and B without faults: everyone created, a tenth suspended; extra keys, foreign users."""
        for i in range(FOREIGN):
            world.fake.add_user(f"foreign{i}", user_email=f"foreign{i}@example.com", max_budget=1.0)
        world.record(self.base)
        assert world.sync().status == "success"
        for i, uid in enumerate(self.base):
            if i % 7 == 0:
                world.fake.add_key(uid)  # a key the person made themselves
            if i % 21 == 0:
                world.fake.add_key(uid, blocked=True)  # a key an admin blocked: never unblocked by syncd
        world.record(self.phase_b())
        report = world.sync()
        assert report.status == "success" and report.applied.by_action == {
            "suspend": len(self.suspended_first),
            "block_keys": len(self.suspended_first),  # each was created with a key (auto_create_keys)
        }


def _unblocked_keys(fake: FakeLiteLLM, users: set[str]) -> dict[str, set[str]]:
    return {u: {k["token"] for k in fake.keys_of(u) if not k["blocked"]} for u in users}


def _control(make_world: Any, scenario: Scenario) -> tuple[dict[str, Any], dict[str, Any]]:
    """The end states of an uninterrupted run: after the target phase and after the revert."""
    world = make_world()
    scenario.prepare(world)
    world.record(scenario.target())
    assert world.sync().status == "success"
    target = end_state(world.fake)
    world.record(scenario.revert())
    assert world.sync().status == "success"
    return target, end_state(world.fake)


def _check_suspensions(world: World, scenario: Scenario, keys_before: dict[str, set[str]]) -> None:
    managed = world.store.load_managed()
    for uid in scenario.to_suspend:
        user = world.fake.users[uid]
        assert user["metadata"]["scim_active"] is False, uid
        assert all(k["blocked"] for k in world.fake.keys_of(uid)), uid
        assert managed[uid].state == "suspended" and set(managed[uid].blocked_keys) == keys_before[uid], uid


def _check_reactivations(world: World, scenario: Scenario, blocked_by_syncd: dict[str, set[str]]) -> None:
    managed = world.store.load_managed()
    for uid in scenario.suspended_first:
        assert world.fake.users[uid]["metadata"]["scim_active"] is True, uid
        for key in world.fake.keys_of(uid):
            assert key["blocked"] is (key["token"] not in blocked_by_syncd[uid]), uid
        assert managed[uid].state == "active", uid


def _faults_case(
    make_world: Any, database_url: str, n: int, seed: int, outage_hold_s: float, name: str
) -> dict[str, Any]:
    scenario = Scenario(n)
    expected_target, expected_revert = _control(make_world, scenario)
    world = make_world(database_url, timeout_s=0.5)
    scenario.prepare(world)
    foreign_before = {u: dict(world.fake.users[u]) for u in world.fake.users if u.startswith("foreign")}
    keys_before = _unblocked_keys(world.fake, scenario.to_suspend)
    blocked_by_syncd = {u: set(m.blocked_keys) for u, m in world.store.load_managed().items()}
    before_run = world.last_run_id()
    calls_before = len(world.fake.calls)

    world.record(scenario.target())
    world.fake.faults = FaultPlan(
        seed=seed, error_rate=0.20, timeout_rate=0.01, fail_after_commit_rate=0.05, hang_s=1.0
    )
    with flip_outage_after(world.fake, calls_before + n // 2, outage_hold_s) as outage:
        converged = world.sync_until_converged(max_runs=60, deadline_s=240)
    world.fake.faults = FaultPlan()

    changed = scenario.to_suspend | scenario.to_update | scenario.suspended_first | scenario.new
    assert end_state(world.fake) == expected_target
    assert {u: world.fake.users[u] for u in foreign_before} == foreign_before
    done = world.audit_counts(before_run)
    assert set(done.values()) == {1}, ("a change applied twice", {k: v for k, v in done.items() if v != 1})
    users_done = {key.rsplit(" ", 1)[0] for key in done}
    # a change not journaled done was written by LiteLLM whose answer was lost, then found in step by a later run
    recorded_by_reading = changed - users_done
    assert recorded_by_reading <= world.failed_keys(before_run) and users_done <= changed
    _check_suspensions(world, scenario, keys_before)
    _check_reactivations(world, scenario, blocked_by_syncd)
    assert outage["started_at_call"] is not None and outage["calls_refused"] > 0
    assert world.sync(drift_check=True).plan.empty, "LiteLLM differs from what syncd recorded"

    calls = world.fake.calls[calls_before:]
    world.record(scenario.revert())
    assert world.sync().status == "success"
    assert end_state(world.fake) == expected_revert, "a change lost after a write that committed but answered 502"
    result = {
        "users": n + n // 2,
        "changes": len(changed),
        "litellm_calls": len(calls),
        "faulted_answers": sum(1 for c in calls if c.status >= 500 or c.status == 429),
        "outage_503": outage["calls_refused"],
        "client_retryable_attempts": world.attempts["retryable"],
        "changes_done_once": len(done),  # a suspension and its block_keys count two
        "changes_found_applied_after_lost_answer": len(recorded_by_reading),
        **converged,
    }
    figures(name, **result)
    return result


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_random_errors_timeouts_lost_answers_and_an_outage_converge_exactly_once(
    make_world: Any, engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/faults.db" if engine == "sqlite" else request.getfixturevalue("postgres").create()
    result = _faults_case(make_world, url, 1000, seed=11 if engine == "sqlite" else 12, outage_hold_s=1.0, name=engine)
    assert result["faulted_answers"] > 100 and result["client_retryable_attempts"] > 100


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22])
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_5000_users_under_faults_and_a_long_outage(
    make_world: Any, engine: str, seed: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/faults.db" if engine == "sqlite" else request.getfixturevalue("postgres").create()
    result = _faults_case(make_world, url, 5000, seed=seed, outage_hold_s=20.0, name=f"slow-{engine}-{seed}")
    assert result["outage_503"] > 0


def test_a_change_back_after_a_write_whose_answer_was_lost_is_applied(make_world: Any) -> None:
    """Regression: promoted, the 502 after the commit fails the change, a rerun finds LiteLLM in step; demoted again."""
    world = make_world(max_retries=0)
    world.record({"alice": {"groups": ["llm-users"]}})
    assert world.sync().status == "success"
    world.record({"alice": {"groups": ["llm-admins"]}})
    world.fake.faults = FaultPlan(fail_after_commit_rate=1.0, paths=("/user/update",))
    assert world.sync().status == "failed" and world.fake.users["alice"]["user_role"] == "proxy_admin"
    world.fake.faults = FaultPlan()
    assert world.sync().plan.empty
    world.record({"alice": {"groups": ["llm-users"]}})
    report = world.sync()
    assert report.applied is not None and report.applied.by_action == {"update": 1}
    assert world.fake.users["alice"]["user_role"] == "internal_user"


def test_connections_reset_instead_of_answers_converge_exactly_once(make_world: Any) -> None:
    """A TCP proxy between syncd and LiteLLM drops the connection instead of 8% of the answers: the request was
    handled (a write committed), the client sees a reset; reruns must reach the uninterrupted end state."""
    scenario = Scenario(300)
    expected_target, expected_revert = _control(make_world, scenario)
    world = make_world()
    scenario.prepare(world)
    proxy = FaultyProxy(int(world.url.rsplit(":", 1)[1]))
    try:
        world.client.close()
        world.client = LiteLLMClient(
            f"http://127.0.0.1:{proxy.port}", MASTER, max_retries=2, backoff_base_s=0.002, on_call=world._count
        )
        before_run = world.last_run_id()
        world.record(scenario.target())
        proxy.arm("flaky", rate=0.08, seed=31)
        converged = world.sync_until_converged(max_runs=40, deadline_s=120)
        resets = proxy.resets
        proxy.arm("pass")
        assert end_state(world.fake) == expected_target
        done = world.audit_counts(before_run)
        assert set(done.values()) == {1}, "a change applied twice"
        world.record(scenario.revert())
        assert world.sync().status == "success" and end_state(world.fake) == expected_revert
    finally:
        proxy.close()
    assert resets > 20
    figures("litellm-resets", users=450, resets=resets, retryable_attempts=world.attempts["retryable"], **converged)
