"""A FAKE LiteLLM proxy (admin API only) for tests and demos, reproducing LiteLLM 1.108.7's recorded answers.

`create_fake_litellm()` answers an ASGI app whose `app.state.fake` is the `FakeLiteLLM` holding users, keys,
teams and a call log; tests read and change it directly. `FaultPlan` injects seeded failures: a faulted call
changes nothing, except under `fail_after_commit_rate`, where the write happens and a 502 is answered anyway.

Recorded behaviour worth knowing (see tests/litellm/test_contract_replay.py for every recorded call):
- /user/info answers 200 for any stored user, including one created by /user/update's upsert, and 404 for an
  id that never existed (the recordings' `user_info_unknown` asked for an id an earlier update had upserted).
- /user/info reads its raw query: `+` is not a space there.
- A key "of a non-admin" is a key whose owner's role is not proxy_admin; it is refused on admin routes.

Run it: `python -m syncd.testing.fake_litellm --host 127.0.0.1 --port 4000 --master-key sk-...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncd.testing import listening_socket
from syncd.testing._fake_keys import KEY_ROUTES
from syncd.testing._fake_state import Call, FakeError, FakeState, detail_error, envelope_error
from syncd.testing._fake_teams import TEAM_ROUTES, TRIAL_NOTICE
from syncd.testing._fake_users import USER_ROUTES, FakeRequest

__all__ = ["Call", "FakeLiteLLM", "FaultPlan", "create_fake_litellm", "main"]

Handler = Callable[[FakeState, FakeRequest], Any]
_ROUTES: dict[tuple[str, str], Handler] = {**USER_ROUTES, **KEY_ROUTES, **TEAM_ROUTES}
_CHAT_PATHS = ("/chat/completions", "/v1/chat/completions")
_READ_METHODS = ("GET", "HEAD")


@dataclass
class FaultPlan:
    """Seeded failures to inject: random statuses, timeouts, latency, an outage, writes that 'fail'."""

    seed: int = 0
    error_rate: float = 0.0
    statuses: tuple[int, ...] = (500, 502, 429)
    latency_s: float = 0.0
    outage: bool = False
    timeout_rate: float = 0.0
    fail_after_commit_rate: float = 0.0
    hang_s: float = 30.0  # how long a "timeout" fault holds the request before answering 504
    retry_after_s: float | None = None  # sent as Retry-After with injected 429 and 503 answers
    paths: tuple[str, ...] = ()  # only these paths are faulted; empty means every path


class FakeLiteLLM(FakeState):
    """The fake's state: users, keys, teams, the call log and the fault plan (settable at runtime)."""

    def __init__(self, master_key: str, faults: FaultPlan | None = None) -> None:
        super().__init__(master_key)
        self.faults = faults or FaultPlan()

    @property
    def faults(self) -> FaultPlan:
        """The fault plan; setting a new one restarts its random sequence from its seed."""
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self._faults = plan
        self._rng = random.Random(plan.seed)

    def add_user(self, user_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Store a user directly (no HTTP, no checks): for seeding tests and benchmarks."""
        return self.insert_user(user_id, **fields)

    def add_key(self, user_id: str | None, **fields: Any) -> str:
        """Store a key for a user directly; answers the raw `sk-` key."""
        return self.raw_key(self.insert_key(user_id, **fields))

    def add_team(self, team_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Store a team directly."""
        return self.insert_team(team_id, **fields)

    def write_calls(self, path: str | None = None) -> int:
        """How many write requests (anything but GET) were answered, optionally to one path."""
        return sum(
            1
            for call in self.calls
            if call.method not in _READ_METHODS and call.path not in _CHAT_PATHS and path in (None, call.path)
        )

    def reset_calls(self) -> None:
        """Forget the call log."""
        self.calls.clear()

    def draw_fault(self, path: str) -> str | None:
        """The fault to inject into this call: outage, timeout, error, after_commit, or None."""
        plan = self._faults
        if plan.outage:
            return "outage"
        if plan.paths and path not in plan.paths:
            return None
        roll = self._rng.random()
        for fault, rate in (
            ("timeout", plan.timeout_rate),
            ("error", plan.error_rate),
            ("after_commit", plan.fail_after_commit_rate),
        ):
            if roll < rate:
                return fault
            roll -= rate
        return None

    def fault_answer(self, fault: str) -> FakeError:
        """The answer of an injected fault."""
        status = {"outage": 503, "timeout": 504, "after_commit": 502}.get(fault) or self._rng.choice(
            self._faults.statuses
        )
        error = envelope_error(status, f"Injected fault ({fault}) from the fake LiteLLM", "fake_fault")
        if status in (429, 503) and self._faults.retry_after_s is not None:
            error.headers["Retry-After"] = f"{self._faults.retry_after_s:g}"
        return error

    def handle(self, method: str, path: str, raw_query: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request (no faults): authenticate, route, render."""
        try:
            return _json(200, self._dispatch(method, path, raw_query, headers, body))
        except FakeError as error:
            return _json(error.status, error.body, error.headers)
        except Exception as exc:  # a bug in the fake: say so loudly, in LiteLLM's envelope
            traceback.print_exc()
            message = f"fake LiteLLM bug: {type(exc).__name__}: {exc}"
            return _json(500, envelope_error(500, message, "fake_internal_error").body)

    def _dispatch(self, method: str, path: str, raw_query: str, headers: dict[str, str], body: bytes) -> Any:
        if path == "/health/liveliness":
            return "I'm alive!"
        caller = _authenticate(self, headers)
        request = FakeRequest(method, path, _query(path, raw_query), _body(method, body))
        if path in _CHAT_PATHS and method == "POST":
            return _chat(self, request, caller)
        if caller is not None:
            _refuse_non_admin(self, caller, path)
        if path.startswith("/scim/v2"):
            raise detail_error(403, "This feature is only available for LiteLLM Enterprise users. " + TRIAL_NOTICE)
        handler = _ROUTES.get((method, path))
        if handler is None:
            if any(known == path for _, known in _ROUTES):
                raise FakeError(405, {"detail": "Method Not Allowed"})
            raise FakeError(404, {"detail": "Not Found"})
        return handler(self, request)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _query(path: str, raw_query: str) -> dict[str, str]:
    if path == "/user/info":
        # LiteLLM reads /user/info's raw query: "%20" is a space, "+" stays a plus.
        pairs = (part.split("=", 1) for part in raw_query.split("&") if "=" in part)
        return {unquote(name): unquote(value) for name, value in pairs}
    return dict(parse_qsl(raw_query, keep_blank_values=True))


def _body(method: str, body: bytes) -> Any:
    if method in _READ_METHODS or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise FakeError(422, {"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]})  # noqa: B904


# --- auth ----------------------------------------------------------------------------------------------------
def _presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-litellm-api-key") or headers.get("api-key") or None


def _authenticate(fake: FakeLiteLLM, headers: dict[str, str]) -> dict[str, Any] | None:
    """None for the master key, the key record for a user's key; the recorded 401s otherwise."""
    key = _presented_key(headers)
    if not key:
        raise envelope_error(401, "Authentication Error, No api key passed in.", "auth_error", "None")
    if key == fake.master_key:
        return None
    record = fake.find_key(key) if key.startswith("sk-") else None
    if record is None:
        raise envelope_error(401, "Authentication Error, Invalid API key provided.", "token_not_found_in_db", "key")
    if record["blocked"]:
        message = "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
        raise envelope_error(401, message, "auth_error", "None")
    owner = fake.users.get(record["user_id"] or "")
    if owner and owner["metadata"].get("scim_active") is False:
        message = f"Authentication Error, User={owner['user_id']} has been deactivated via SCIM. Keys owned by this user cannot be used."  # noqa: E501
        raise envelope_error(401, message, "auth_error", "None")
    return record


def _refuse_non_admin(fake: FakeLiteLLM, record: dict[str, Any], path: str) -> None:
    owner = fake.users.get(record["user_id"] or "")
    role = (owner or {}).get("user_role") or "internal_user"
    if role == "proxy_admin":
        return
    if path == "/user/list":
        raise detail_error(403, "Only proxy admins and organization admins can list users.")
    message = (
        "Authentication Error, Only proxy admin can be used to generate, delete, update info for new "
        f"keys/users/teams. Route={path}. Your role={role}. Your user_id=*****"
    )
    raise envelope_error(401, message, "auth_error", "None")


# --- /chat/completions: only as far as suspension shows -------------------------------------------------------
def _chat(fake: FakeLiteLLM, request: FakeRequest, record: dict[str, Any] | None) -> Any:
    model = (request.body or {}).get("model")
    if record is not None:
        owner = fake.users.get(record["user_id"] or "")
        _check_model_access(record, owner, model)
        _check_budget(owner)
        _check_rate_limit(fake, record)
    # There is no upstream model behind the fake, as there was none behind the recorded proxy.
    message = (
        "litellm.InternalServerError: InternalServerError: OpenAIException - Connection error.\n\n"
        f"LiteLLM: model group '{model}' failed with the error above. No fallback was attempted."
    )
    raise envelope_error(500, message, "internal_server_error")


def _check_model_access(record: dict[str, Any], owner: dict[str, Any] | None, model: Any) -> None:
    # An empty list means every model; ["no-default-models"] means none.
    for allowed in (record["models"], (owner or {}).get("models") or []):
        if allowed and model not in allowed:
            message = (
                f"The requested model '{model}' is not available for this API key, or the model name is invalid."
                " Check the models available to you and try again."
            )
            raise envelope_error(403, message, "key_model_access_denied", "model")


def _check_budget(owner: dict[str, Any] | None) -> None:
    if owner and owner["max_budget"] is not None and owner["spend"] >= owner["max_budget"]:
        message = (
            f"ExceededBudget: User={owner['user_id']} over budget. "
            f"Spend={float(owner['spend'])}, Budget={float(owner['max_budget'])}"
        )
        raise envelope_error(422, message, "budget_exceeded")


def _check_rate_limit(fake: FakeLiteLLM, record: dict[str, Any]) -> None:
    limit = record["rpm_limit"]
    if limit is None:
        return
    window, now = fake.rate_window(record["token"]), time.time()
    if window[0] is None or now - window[0] >= 60:
        window[:] = [now, 0]
    if window[1] >= limit:
        resets = datetime.fromtimestamp(window[0] + 60, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        message = (
            f"Rate limit exceeded for api_key: {record['token']}. Limit type: requests. "
            f"Current limit: {limit}, Remaining: 0. Limit resets at: {resets}"
        )
        raise envelope_error(429, message, "throttling_error")
    window[1] += 1


# --- the ASGI app ----------------------------------------------------------------------------------------------
async def _endpoint(request: Request) -> Response:
    fake: FakeLiteLLM = request.app.state.fake
    body = await request.body()
    if fake.faults.latency_s:
        await asyncio.sleep(fake.faults.latency_s)
    path, method = request.url.path, request.method
    fault = fake.draw_fault(path)
    if fault == "timeout":
        await asyncio.sleep(fake.faults.hang_s)
    if fault in (None, "after_commit"):
        response = fake.handle(method, path, request.url.query, dict(request.headers), body)
    if fault is not None:
        error = fake.fault_answer(fault)
        response = _json(error.status, error.body, error.headers)
    fake.calls.append(Call(method, path, response.status_code, _json_or_none(body)))
    return response


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def create_fake_litellm(master_key: str = "sk-fake-master", *, faults: FaultPlan | None = None) -> Starlette:
    """A fake LiteLLM ASGI app; `app.state.fake` is its `FakeLiteLLM`."""
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", _endpoint, methods=methods)])
    app.state.fake = FakeLiteLLM(master_key, faults)
    return app


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A FAKE LiteLLM admin API for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--master-key", default="sk-fake-master")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of calls answered 500/502/429")
    parser.add_argument("--latency-s", type=float, default=0.0, help="added to every call")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve the fake with uvicorn until interrupted."""
    import uvicorn

    args = _parse_args(argv)
    plan = FaultPlan(seed=args.seed, error_rate=args.error_rate, latency_s=args.latency_s)
    shown_key = args.master_key[:5] + "..." if len(args.master_key) > 8 else "(short key)"
    banner = (
        "=" * 78 + "\n"
        "  FAKE LiteLLM: an in-memory stand-in for tests and demos, NOT a LiteLLM proxy.\n"
        "  It answers the admin API as LiteLLM 1.108.7 did; nothing is persisted, no model is served.\n"
        f"  Listening on http://{args.host}:{args.port}  (master key {shown_key})\n" + "=" * 78
    )
    print(banner, file=sys.stderr, flush=True)
    app = create_fake_litellm(args.master_key, faults=plan)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listening_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
