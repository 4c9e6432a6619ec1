"""LiteLLMClient against the fake LiteLLM over real HTTP: every method, error normalisation, retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from syncd.litellm import (
    AlreadyMemberError,
    AuthError,
    ConflictError,
    EnterpriseFeatureError,
    InvalidRequestError,
    LiteLLMClient,
    LiteLLMError,
    NotFoundError,
    NotMemberError,
    RetryableError,
    TerminalError,
    UserPage,
)
from syncd.testing.fake_litellm import FakeLiteLLM, FaultPlan

MASTER_KEY = "sk-test-master-7c1d"  # the key tests/litellm/conftest.py gives the fake
ROLE_MESSAGE = (
    "body.user_role: Input should be <LitellmUserRoles.PROXY_ADMIN: 'proxy_admin'>, "
    "<LitellmUserRoles.PROXY_ADMIN_VIEW_ONLY: 'proxy_admin_viewer'>, <LitellmUserRoles.INTERNAL_USER: "
    "'internal_user'> or <LitellmUserRoles.INTERNAL_USER_VIEW_ONLY: 'internal_user_viewer'>"
)


class CallLog:
    """Collects what the on_call hook reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, float]] = []

    def __call__(self, endpoint: str, status: int | None, seconds: float) -> None:
        self.calls.append((endpoint, status, seconds))


@pytest.fixture
def hook() -> CallLog:
    """The on_call hook of `client`."""
    return CallLog()


@pytest.fixture
def client(fake_url: str, fake: FakeLiteLLM, hook: CallLog) -> Iterator[LiteLLMClient]:
    """A client with tiny backoff and a short timeout, so retry tests stay fast."""
    with LiteLLMClient(
        fake_url,
        MASTER_KEY,
        timeout_s=2.0,
        max_retries=3,
        backoff_base_s=0.001,
        backoff_max_s=0.005,
        on_call=hook,
    ) as made:
        yield made


def _attempts(hook: CallLog, endpoint: str) -> int:
    return sum(1 for called, _, _ in hook.calls if called == endpoint)


# --- users ---------------------------------------------------------------------------------------------------
def test_new_user_then_info_and_update(client: LiteLLMClient) -> None:
    created = client.new_user({"user_id": "u-new", "user_email": "u-new@example.com", "auto_create_key": False})
    assert created["user_id"] == "u-new" and created["key"] == ""
    client.update_user({"user_id": "u-new", "max_budget": 5, "metadata": {"syncd": {"managed": True}}})
    info = client.user_info("u-new")
    assert info is not None
    assert info["user_info"]["max_budget"] == 5.0
    assert info["user_info"]["metadata"] == {"syncd": {"managed": True}}


def test_user_info_of_unknown_user_is_none(client: LiteLLMClient) -> None:
    assert client.user_info("never-existed") is None


def test_user_id_with_a_space_is_sent_as_percent_20(client: LiteLLMClient, fake_url: str) -> None:
    client.new_user({"user_id": "ann smith", "auto_create_key": False})
    info = client.user_info("ann smith")
    assert info is not None and info["user_id"] == "ann smith"
    # httpx's own params encoding sends "+", which LiteLLM's raw query reading does not take for a space.
    plain = httpx.get(f"{fake_url}/user/info", params={"user_id": "ann smith"}, headers=_auth())
    assert plain.status_code == 404


def test_duplicate_user_is_a_conflict_with_a_clean_message(client: LiteLLMClient, hook: CallLog) -> None:
    client.new_user({"user_id": "dup", "user_email": "Dup@example.com", "auto_create_key": False})
    with pytest.raises(ConflictError) as caught:
        client.new_user({"user_id": "dup", "auto_create_key": False})
    assert caught.value.message == "User with id dup already exists"
    with pytest.raises(ConflictError) as by_email:
        client.new_user({"user_id": "dup2", "user_email": "dup@EXAMPLE.com", "auto_create_key": False})
    assert by_email.value.message == "User with email dup@EXAMPLE.com already exists"
    assert _attempts(hook, "/user/new") == 3  # a 4xx is never retried


def test_validation_error_is_normalised(client: LiteLLMClient) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        client.new_user({"user_id": "bad-role", "user_role": "team"})
    assert caught.value.status == 422
    assert caught.value.message == ROLE_MESSAGE


def test_bad_budget_duration_message_is_unwrapped(client: LiteLLMClient) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        client.new_user({"user_id": "bd", "budget_duration": "yearly", "auto_create_key": False})
    assert caught.value.message == "Invalid budget_duration 'yearly'. Use a format like '1h', '24h', '7d', or '30d'."


def test_list_users_pages_and_caps_page_size(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    for index in range(5):
        fake.add_user(f"page-{index}")
    page = client.list_users(page=1, page_size=1000)  # LiteLLM answers 422 above 100: the client caps it
    assert isinstance(page, UserPage)
    assert page.total == fake.user_count() and page.page == 1
    assert len(page.users) == min(100, page.total)
    two = client.list_users(page=1, page_size=2, user_ids=["page-1", "page-3", "nobody"])
    assert [user["user_id"] for user in two.users] == ["page-3", "page-1"]
    assert (two.total, two.total_pages) == (2, 1)


def test_get_users_reads_in_batches(client: LiteLLMClient, fake: FakeLiteLLM, hook: CallLog) -> None:
    ids = [f"batch-{index}" for index in range(250)]
    for user_id in ids:
        fake.add_user(user_id)
    found = client.get_users([*ids, "not-there"], batch=100)
    assert sorted(user["user_id"] for user in found) == sorted(ids)
    assert _attempts(hook, "/user/list") == 3


def test_iter_all_users_yields_everyone_once(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    for index in range(230):
        fake.add_user(f"all-{index}")
    seen = [user["user_id"] for user in client.iter_all_users(page_size=50, parallel=4)]
    assert len(seen) == len(set(seen)) == fake.user_count()


def test_delete_users_ignores_users_already_gone(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    fake.add_user("del-1")
    fake.add_user("del-2")
    fake.add_key("del-1")
    client.delete_users(["del-1", "gone-already", "del-2"])
    assert "del-1" not in fake.users and "del-2" not in fake.users
    assert fake.keys_of("del-1") == []
    client.delete_users(["gone-already"])


# --- keys ----------------------------------------------------------------------------------------------------
def test_keys_list_block_unblock(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    fake.add_user("keyed")
    raw = client.generate_key({"user_id": "keyed", "key_alias": "keyed-1"})["key"]
    for _ in range(120):
        fake.add_key("keyed")
    keys = client.list_keys("keyed")
    assert len(keys) == 121  # two pages of 100
    token = next(key["token"] for key in keys if key["key_alias"] == "keyed-1")
    assert client.block_key(token)["blocked"] is True
    assert fake.find_key(raw)["blocked"] is True  # type: ignore[index]
    assert client.unblock_key(raw)["blocked"] is False


def test_block_unknown_key_is_not_found(client: LiteLLMClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.block_key("sk-unknownunknownunknown")
    assert caught.value.message == "Key not found in database"


# --- teams ---------------------------------------------------------------------------------------------------
def test_team_lifecycle_and_typed_member_errors(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    fake.add_user("member")
    assert client.new_team({"team_id": "t1", "team_alias": "Team One"})["team_id"] == "t1"
    with pytest.raises(InvalidRequestError) as duplicate:
        client.new_team({"team_id": "t1"})
    assert duplicate.value.message == "Team id = t1 already exists. Please use a different team id."
    assert client.update_team({"team_id": "t1", "max_budget": 3})["data"]["max_budget"] == 3.0
    assert any(team["team_alias"] == "Team One" for team in client.list_teams())
    client.team_member_add("t1", "member", max_budget_in_team=2)
    with pytest.raises(AlreadyMemberError):
        client.team_member_add("t1", "member")
    with pytest.raises(EnterpriseFeatureError) as admin:
        client.team_member_add("t1", "member", role="admin")
    assert admin.value.message.startswith("Assigning team admins is a premium feature. Got=user_id='member'")
    assert client.team_member_update("t1", "member", max_budget_in_team=4)["max_budget_in_team"] == 4.0
    info = client.team_info("t1")
    assert info is not None and "member" in {m["user_id"] for m in info["team_info"]["members_with_roles"]}
    client.team_member_delete("t1", "member")
    with pytest.raises(NotMemberError) as not_member:
        client.team_member_delete("t1", "member")
    assert not_member.value.message == "User not found in team"
    client.delete_teams(["t1"])
    assert client.team_info("t1") is None


def test_member_update_to_admin_detail_string_is_enterprise(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    fake.add_team("t-admin")
    with pytest.raises(EnterpriseFeatureError) as caught:
        client.team_member_update("t-admin", "someone", role="admin")
    assert caught.value.message == (
        "Assigning team admins is a premium feature. You must be a LiteLLM Enterprise user to use this feature. "
        "If you have a license please set `LITELLM_LICENSE` in your env. Get a 7 day trial key here: "
        "https://www.litellm.ai/#trial. Pricing: https://www.litellm.ai/#pricing"
    )


def test_member_add_to_unknown_team_is_not_found(client: LiteLLMClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.team_member_add("no-team", "x")
    assert caught.value.message == "Team doesn't exist in db. Team=no-team. Create team via `/team/new` call."


# --- auth and secrecy ----------------------------------------------------------------------------------------
def test_bad_key_is_an_auth_error_that_never_shows_the_key(fake_url: str, fake: FakeLiteLLM) -> None:
    secret = "sk-wrong-master-key-123"
    with LiteLLMClient(fake_url, secret, max_retries=0) as bad:
        with pytest.raises(AuthError) as caught:
            bad.list_users()
        assert caught.value.message == "Authentication Error, Invalid API key provided."
        assert caught.value.status == 401 and not caught.value.retryable
        for text in (str(caught.value), repr(caught.value), repr(bad), str(bad)):
            assert secret not in text


def test_key_echoed_by_the_server_is_scrubbed() -> None:
    secret = "sk-echo-me-9f2"

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": f"bad key {request.headers['authorization']}"})

    transport = httpx.MockTransport(echo)
    with (
        LiteLLMClient("http://litellm.test", secret, transport=transport) as client,
        pytest.raises(InvalidRequestError) as caught,
    ):
        client.new_user({})
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert caught.value.message == "bad key Bearer ***"


def test_on_call_reports_endpoint_without_ids(client: LiteLLMClient, hook: CallLog) -> None:
    client.user_info("secret-user-id")
    assert hook.calls[-1][0] == "/user/info" and hook.calls[-1][1] == 404
    assert all("secret-user-id" not in endpoint for endpoint, _, _ in hook.calls)


# --- error envelopes, one by one -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "error_class", "message"),
    [
        (409, {"error": {"message": "{'error': 'User with id alice already exists'}", "code": "409"}},
         ConflictError, "User with id alice already exists"),
        (404, {"error": {"message": "{'message': 'Team not found, passed team id: nope.'}", "code": "404"}},
         NotFoundError, "Team not found, passed team id: nope."),
        (404, {"error": {"message": "User ghost not found", "type": "internal_server_error"}},
         NotFoundError, "User ghost not found"),
        (404, {"detail": {"error": "User not found, passed user_id=ghost"}},
         NotFoundError, "User not found, passed user_id=ghost"),
        (400, {"detail": "Assigning team admins is a premium feature. You must be ..."},
         EnterpriseFeatureError, "Assigning team admins is a premium feature. You must be ..."),
        (403, {"detail": {"error": "This feature is only available for LiteLLM Enterprise users."}},
         EnterpriseFeatureError, "This feature is only available for LiteLLM Enterprise users."),
        (403, {"detail": {"error": "Only proxy admins and organization admins can list users."}},
         AuthError, "Only proxy admins and organization admins can list users."),
        (422, {"detail": [{"type": "less_than_equal", "loc": ["query", "page_size"],
                           "msg": "Input should be less than or equal to 100"}]},
         InvalidRequestError, "query.page_size: Input should be less than or equal to 100"),
        (400, {"error": {"message": "User already in team. Member: user_id=bob", "type": "team_member_x"}},
         AlreadyMemberError, "User already in team. Member: user_id=bob"),
        (405, "not json", TerminalError, "not json"),
    ],
)  # fmt: skip
def test_error_envelopes_are_normalised(status: int, body: Any, error_class: type, message: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    transport = httpx.MockTransport(answer)
    with (
        LiteLLMClient("http://litellm.test", "sk-m", transport=transport) as client,
        pytest.raises(LiteLLMError) as caught,
    ):
        client.update_user({"user_id": "x"})
    assert type(caught.value) is error_class
    assert caught.value.message == message
    assert caught.value.endpoint == "/user/update" and caught.value.status == status


# --- retries -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 502, 429])
def test_retryable_status_is_retried_then_raised(
    client: LiteLLMClient, fake: FakeLiteLLM, hook: CallLog, status: int
) -> None:
    fake.faults = FaultPlan(error_rate=1.0, statuses=(status,))
    with pytest.raises(RetryableError) as caught:
        client.update_user({"user_id": f"retry-{status}"})
    assert caught.value.status == status and caught.value.retryable
    assert _attempts(hook, "/user/update") == 4  # max_retries=3
    assert f"retry-{status}" not in fake.users  # a faulted call changes nothing


def test_intermittent_errors_are_absorbed(fake_url: str, fake: FakeLiteLLM, hook: CallLog) -> None:
    fake.faults = FaultPlan(seed=7, error_rate=0.5)
    with LiteLLMClient(fake_url, MASTER_KEY, max_retries=20, backoff_max_s=0.001, on_call=hook) as client:
        for index in range(10):
            client.new_user({"user_id": f"flaky-{index}", "auto_create_key": False})
    assert all(f"flaky-{index}" in fake.users for index in range(10))
    assert _attempts(hook, "/user/new") > 10


def test_timeouts_are_retried(fake_url: str, fake: FakeLiteLLM, hook: CallLog) -> None:
    fake.faults = FaultPlan(timeout_rate=1.0, hang_s=1.0)
    client = LiteLLMClient(fake_url, MASTER_KEY, timeout_s=0.1, max_retries=2, backoff_base_s=0.001, on_call=hook)
    with client, pytest.raises(RetryableError) as caught:
        client.list_users()
    assert caught.value.status is None and "timed out" in caught.value.message
    assert hook.calls == [("/user/list", None, pytest.approx(0.1, abs=0.2))] * 3


def test_connection_errors_are_retried(hook: CallLog) -> None:
    client = LiteLLMClient("http://127.0.0.1:9", "sk-m", max_retries=2, backoff_base_s=0.001, on_call=hook)
    with client, pytest.raises(RetryableError) as caught:
        client.list_teams()
    assert caught.value.status is None and caught.value.message.startswith("connection failed")
    assert _attempts(hook, "/team/list") == 3


def test_outage_answers_503(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    fake.faults = FaultPlan(outage=True)
    with pytest.raises(RetryableError) as caught:
        client.list_users()
    assert caught.value.status == 503


def test_retry_after_is_honoured_within_backoff_max(client: LiteLLMClient, fake: FakeLiteLLM, hook: CallLog) -> None:
    fake.faults = FaultPlan(error_rate=1.0, statuses=(429,), retry_after_s=100)
    started = time.monotonic()
    with pytest.raises(RetryableError) as caught:
        client.list_users()
    assert caught.value.retry_after_s == 100
    assert time.monotonic() - started < 1.0  # capped at backoff_max_s, not 100 s per attempt
    assert _attempts(hook, "/user/list") == 4


def test_backoff_is_full_jitter_and_bounded() -> None:
    client = LiteLLMClient("http://litellm.test", "sk-m", backoff_base_s=0.2, backoff_max_s=1.0)
    error = RetryableError("x", status=500)
    for attempt in range(8):
        ceiling = min(1.0, 0.2 * 2**attempt)
        delays = [client._backoff(attempt, error) for _ in range(50)]
        assert all(0 <= delay <= ceiling for delay in delays)
    assert client._backoff(3, RetryableError("x", status=429, retry_after_s=0.3)) == 0.3
    client.close()


def test_write_that_happened_but_answered_502(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    # The classic "did it happen?": retried, the create then meets its own earlier success as a 409.
    fake.faults = FaultPlan(fail_after_commit_rate=1.0, paths=("/user/new",))
    with pytest.raises(RetryableError):
        client.new_user({"user_id": "committed", "auto_create_key": False})
    assert "committed" in fake.users
    fake.faults = FaultPlan()
    with pytest.raises(ConflictError):
        client.new_user({"user_id": "committed", "auto_create_key": False})


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {MASTER_KEY}"}


def test_get_users_reads_ids_the_list_filter_cannot_express_one_by_one(
    client: LiteLLMClient, fake: FakeLiteLLM, hook: CallLog
) -> None:
    for user_id in ("gu-doe, john", "gu-user1", "gu-user10", " gu-spaced"):
        fake.add_user(user_id, user_email=f"{user_id.strip()}@example.com")
    hook.calls.clear()
    found = client.get_users(["gu-doe, john", "gu-user1", " gu-spaced", "gu-absent, x"])
    assert sorted(u["user_id"] for u in found) == [" gu-spaced", "gu-doe, john", "gu-user1"]  # no loose gu-user10
    endpoints = [endpoint for endpoint, _, _ in hook.calls]
    assert endpoints.count("/user/info") == 3 and endpoints.count("/user/list") == 1


def test_users_with_an_email_are_found_case_insensitively_and_exactly(client: LiteLLMClient, fake: FakeLiteLLM) -> None:
    fake.add_user("we-a", user_email="Pat@Example.com")
    fake.add_user("we-b", user_email="pat@example.com.au")  # LiteLLM's filter is a substring match
    assert [u["user_id"] for u in client.users_with_email("pat@example.com")] == ["we-a"]
