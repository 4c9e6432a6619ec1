"""The fake LiteLLM itself: faults, the call log, update semantics, suspension, scale, the runnable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import Call, FakeLiteLLM, FaultPlan, create_fake_litellm


@pytest.fixture
def http(fake_url: str, master_key: str) -> Iterator[httpx.Client]:
    """A plain HTTP client with the master key."""
    with httpx.Client(base_url=fake_url, headers={"Authorization": f"Bearer {master_key}"}) as client:
        yield client


def test_faulted_calls_change_nothing_and_are_logged(http: httpx.Client, fake: FakeLiteLLM) -> None:
    fake.faults = FaultPlan(error_rate=1.0, statuses=(502,))
    answer = http.post("/user/new", json={"user_id": "f-none", "auto_create_key": False})
    assert answer.status_code == 502
    assert "f-none" not in fake.users
    assert fake.calls == [Call("POST", "/user/new", 502)]
    assert fake.write_calls() == 1 and fake.write_calls("/user/update") == 0


def test_fail_after_commit_writes_then_answers_502(http: httpx.Client, fake: FakeLiteLLM) -> None:
    fake.faults = FaultPlan(fail_after_commit_rate=1.0)
    assert http.post("/user/new", json={"user_id": "f-commit", "auto_create_key": False}).status_code == 502
    assert "f-commit" in fake.users


def test_faults_are_seeded_and_reset_with_the_plan(http: httpx.Client, fake: FakeLiteLLM) -> None:
    def statuses() -> list[int]:
        fake.faults = FaultPlan(seed=3, error_rate=0.5)
        return [http.get("/team/list").status_code for _ in range(20)]

    first = statuses()
    assert first == statuses() and 200 in first and set(first) - {200}


def test_outage_answers_503_to_everything(http: httpx.Client, fake: FakeLiteLLM) -> None:
    fake.faults = FaultPlan(outage=True, retry_after_s=2)
    answer = http.get("/user/list")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "2"


def test_update_ignores_empty_values_but_null_clears_limits(http: httpx.Client, fake: FakeLiteLLM) -> None:
    fake.add_user("upd", models=["m1"], max_budget=5.0, tpm_limit=9, metadata={"a": 1, "b": 2})
    body = {"user_id": "upd", "models": [], "metadata": {}, "user_alias": None, "max_budget": None, "tpm_limit": None}
    data = http.post("/user/update", json=body).json()["data"]
    assert (data["models"], data["metadata"], data["max_budget"], data["tpm_limit"]) == (
        ["m1"],
        {"a": 1, "b": 2},
        None,
        None,
    )
    data = http.post("/user/update", json={"user_id": "upd", "metadata": {"c": 3}}).json()["data"]
    assert data["metadata"] == {"c": 3}  # replaced wholesale, never merged


@pytest.mark.parametrize(
    ("duration", "status"),
    [("30s", 200), ("5m", 200), ("24h", 200), ("7d", 200), ("2w", 200), ("1mo", 200), ("hourly", 200),
     ("daily", 200), ("weekly", 200), ("monthly", 200), ("yearly", 400), ("1y", 400), ("2mo", 400), ("d", 400),
     ("400000w", 200), ("600000w", 400)],
)  # fmt: skip
def test_budget_durations(http: httpx.Client, fake: FakeLiteLLM, duration: str, status: int) -> None:
    body = {"user_id": f"bd-{duration}", "budget_duration": duration, "auto_create_key": False}
    assert http.post("/user/new", json=body).status_code == status


def test_user_ids_filter_splits_on_commas_and_matches_one_id_loosely(http: httpx.Client, fake: FakeLiteLLM) -> None:
    """As the real proxy (1.108.7): one id is a case-insensitive substring, several ids match exactly, trimmed."""
    for user_id in ("ids-user1", "IDS-USER10", "ids-user2", "doe, john"):
        fake.add_user(user_id)

    def listed(value: str) -> set[str]:
        answer = http.get("/user/list", params={"user_ids": value, "page_size": 100}).json()
        return {user["user_id"] for user in answer["users"]}

    assert listed("ids-user1") == {"ids-user1", "IDS-USER10"}
    assert listed("ids-user1, ids-user2") == {"ids-user1", "ids-user2"}
    assert listed("doe, john") == set()  # split in two, neither exact
    assert listed("doe") == {"doe, john"}


def test_email_uniqueness_is_checked_on_create_only(http: httpx.Client, fake: FakeLiteLLM) -> None:
    body = {"user_email": "Shared@Example.com", "auto_create_key": False}
    assert http.post("/user/new", json={"user_id": "em-a", **body}).status_code == 200
    clash = http.post("/user/new", json={"user_id": "em-b", **body, "user_email": "shared@example.com"})
    assert clash.status_code == 409 and "already exists" in clash.text
    assert http.post("/user/new", json={"user_id": "em-b", "auto_create_key": False}).status_code == 200
    same = http.post("/user/update", json={"user_id": "em-b", "user_email": "shared@example.com"})
    assert same.status_code == 200  # /user/update does not check: two users now share one email
    assert fake.users["em-a"]["user_email"] == "Shared@Example.com"
    assert fake.users["em-b"]["user_email"] == "shared@example.com"
    http.post("/user/update", json={"user_id": "em-a", "user_email": "moved@example.com"})
    clash = http.post("/user/new", json={"user_id": "em-c", **body})
    assert clash.status_code == 409  # em-b still holds it


def test_suspension_refuses_the_users_keys(http: httpx.Client, fake: FakeLiteLLM, fake_url: str) -> None:
    fake.add_user("susp", metadata={"syncd": {"managed": True}})
    key = fake.add_key("susp")
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    as_user = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{fake_url}/chat/completions", json=chat, headers=as_user).status_code == 500
    http.post("/user/update", json={"user_id": "susp", "metadata": {"scim_active": False}})
    refused = httpx.post(f"{fake_url}/chat/completions", json=chat, headers=as_user)
    assert refused.status_code == 401 and "deactivated via SCIM" in refused.json()["error"]["message"]
    http.post("/user/update", json={"user_id": "susp", "metadata": {"scim_active": True}})
    http.post("/key/block", json={"key": key})
    assert httpx.post(f"{fake_url}/chat/completions", json=chat, headers=as_user).status_code == 401


def test_user_delete_removes_keys_and_memberships(http: httpx.Client, fake: FakeLiteLLM) -> None:
    fake.add_user("gone")
    fake.add_team("gone-team")
    key = fake.add_key("gone", team_id="gone-team")
    http.post("/team/member_add", json={"team_id": "gone-team", "member": {"role": "user", "user_id": "gone"}})
    assert http.post("/user/delete", json={"user_ids": ["gone"]}).json() == 1
    assert fake.find_key(key) is None
    assert "gone" not in fake.team_memberships["gone-team"]


def test_paging_stays_fast_with_100k_users() -> None:
    state = create_fake_litellm().state.fake
    for index in range(100_000):
        state.add_user(f"user-{index:06d}", user_email=f"user-{index}@example.com")
    started = time.perf_counter()
    for page in range(1, 51):
        state.users_newest_first(page, 100)
    state.remove_user("user-050000")
    assert time.perf_counter() - started < 0.5
    assert state.users_newest_first(1, 1)[0]["user_id"] == "user-099999"
    assert state.user_by_email("USER-7@example.com")["user_id"] == "user-000007"  # type: ignore[index]


def test_runnable_prints_a_fake_banner_and_serves(tmp_path: object) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "syncd.testing.fake_litellm", "--port", str(port), "--master-key", "sk-demo-key"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stderr is not None
        assert "FAKE LiteLLM" in process.stderr.readline() + process.stderr.readline()
        answer = _wait_for(f"http://127.0.0.1:{port}/user/list", {"Authorization": "Bearer sk-demo-key"})
        assert answer.json()["total"] == 0
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_in_thread_shuts_down() -> None:
    with serve_in_thread(create_fake_litellm("k")) as url:
        assert httpx.get(f"{url}/health/liveliness").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health/liveliness")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, headers: dict[str, str]) -> httpx.Response:
    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(url, headers=headers)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
