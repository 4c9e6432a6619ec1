"""The fake's /user/* and /key/* endpoints, answering as LiteLLM 1.108.7 did in the recordings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from syncd.testing import _shapes as shapes
from syncd.testing._fake_state import (
    USER_ROLES,
    FakeError,
    FakeState,
    detail_error,
    envelope_error,
    parse_budget_duration,
)

__all__ = ["USER_ROUTES", "FakeRequest", "check_budget_duration", "page_number", "page_size", "validate_fields"]

_ROLE_MESSAGE = "Input should be " + ", ".join(
    f"<LitellmUserRoles.{name}: '{role}'>"
    for name, role in zip(
        ("PROXY_ADMIN", "PROXY_ADMIN_VIEW_ONLY", "INTERNAL_USER", "INTERNAL_USER_VIEW_ONLY"), USER_ROLES, strict=True
    )
)
_ROLE_MESSAGE = _ROLE_MESSAGE.rsplit(", ", 1)[0] + " or " + _ROLE_MESSAGE.rsplit(", ", 1)[1]
# /user/update ignores these when null... except the limits below, which an explicit null clears.
_CLEARABLE = ("max_budget", "budget_duration", "tpm_limit", "rpm_limit")
_UPDATABLE = (
    *("user_email", "user_alias", "user_role", "models", "max_budget", "budget_duration"),
    *("tpm_limit", "rpm_limit", "metadata", "max_parallel_requests", "spend"),
)


@dataclass(frozen=True)
class FakeRequest:
    """A parsed request: query parameters (decoded as LiteLLM decodes them) and the JSON body."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


# --- validation (FastAPI's 422 shapes) ---------------------------------------------------------------------
def _invalid(loc: list[str], type_: str, message: str) -> FakeError:
    return FakeError(422, {"detail": [{"type": type_, "loc": loc, "msg": message}]})


def _float_error(value: Any) -> tuple[str, str] | None:
    if isinstance(value, bool | int | float):
        return None
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "float_parsing", "Input should be a valid number, unable to parse string as a number"
        return None
    return "float_type", "Input should be a valid number"


def _int_error(value: Any) -> tuple[str, str] | None:
    if isinstance(value, bool | int) or (isinstance(value, float) and value.is_integer()):
        return None
    if isinstance(value, float):
        return "int_from_float", "Input should be a valid integer, got a number with a fractional part"
    if isinstance(value, str):
        if value.strip().lstrip("-").isdigit():
            return None
        return "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
    return "int_type", "Input should be a valid integer"


def _field_error(name: str, value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if name == "user_role" and value not in USER_ROLES:
        return "literal_error", _ROLE_MESSAGE
    if name in ("max_budget", "max_budget_in_team", "soft_budget"):
        return _float_error(value)
    if name in ("tpm_limit", "rpm_limit", "max_parallel_requests"):
        return _int_error(value)
    if name in ("models", "teams") and not isinstance(value, list):
        return "list_type", "Input should be a valid list"
    if name == "metadata" and not isinstance(value, dict):
        return "dict_type", "Input should be a valid dictionary"
    return None


def validate_fields(body: Any) -> dict[str, Any]:
    """Check a JSON body as LiteLLM's pydantic models do; answers it with numbers coerced."""
    if not isinstance(body, dict):
        message = "Input should be a valid dictionary or object to extract fields from"
        raise _invalid(["body"], "model_attributes_type", message)
    errors = []
    for name, value in body.items():
        problem = _field_error(name, value)
        if problem:
            errors.append({"type": problem[0], "loc": ["body", name], "msg": problem[1]})
    if errors:
        raise FakeError(422, {"detail": errors})
    coerced = dict(body)
    for name in ("max_budget", "max_budget_in_team", "soft_budget"):
        if coerced.get(name) is not None:
            coerced[name] = float(coerced[name])
    for name in ("tpm_limit", "rpm_limit", "max_parallel_requests"):
        if coerced.get(name) is not None:
            coerced[name] = int(coerced[name])
    return coerced


def check_budget_duration(value: Any) -> None:
    """The recorded 400 for a budget_duration LiteLLM does not understand."""
    if value is not None and parse_budget_duration(str(value)) is None:
        message = f"Invalid budget_duration '{value}'. Use a format like '1h', '24h', '7d', or '30d'."
        raise envelope_error(400, repr({"error": message}), "internal_server_error")


def page_size(query: dict[str, str], name: str, default: int) -> int:
    """A page size from the query; the recorded 422 above 100."""
    raw = query.get(name)
    size = int(raw) if raw and raw.lstrip("-").isdigit() else default
    if size > 100:
        raise _invalid(["query", name], "less_than_equal", "Input should be less than or equal to 100")
    if size < 1:
        raise _invalid(["query", name], "greater_than_equal", "Input should be greater than or equal to 1")
    return size


def page_number(query: dict[str, str]) -> int:
    """The page number from the query (1 when absent)."""
    raw = query.get("page", "1")
    return max(int(raw), 1) if raw.isdigit() else 1


# --- /user/* -----------------------------------------------------------------------------------------------
def user_new(state: FakeState, request: FakeRequest) -> Any:
    """POST /user/new: 409 on a duplicate id or email, a key unless auto_create_key is false."""
    body = validate_fields(request.body)
    check_budget_duration(body.get("budget_duration"))
    user_id = body.get("user_id")
    if user_id and user_id in state.users:
        raise envelope_error(409, repr({"error": f"User with id {user_id} already exists"}), "internal_server_error")
    if state.user_by_email(body.get("user_email")):
        message = repr({"error": f"User with email {body['user_email']} already exists"})
        raise envelope_error(409, message, "internal_server_error")
    fields = {name: body[name] for name in _UPDATABLE if body.get(name) is not None and name != "spend"}
    user = state.insert_user(user_id, **fields)
    teams = [team_id for team_id in body.get("teams") or [] if team_id in state.teams]
    for team_id in teams:
        state.add_member(state.teams[team_id], user, "user")
    answer = shapes.render(
        shapes.NEW_USER,
        **{name: user[name] for name in ("user_id", "user_email", "user_role", "models", "metadata")},
        **{name: user[name] for name in ("max_budget", "tpm_limit", "rpm_limit", "budget_duration", "user_alias")},
        teams=teams if body.get("teams") is not None else None,
        key="",
        model_max_budget=None,
        budget_fallbacks=None,
        access_group_ids=None,
    )
    if body.get("auto_create_key", True):
        answer.update(_auto_key_fields(state, user))
    return answer


def _auto_key_fields(state: FakeState, user: dict[str, Any]) -> dict[str, Any]:
    record = state.insert_key(
        user["user_id"], generated=False, models=list(user["models"]), metadata=dict(user["metadata"])
    )
    return {
        "key": state.raw_key(record),
        "key_name": record["key_name"],
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
        "router_settings": dict(shapes.ROUTER_SETTINGS),
        "model_max_budget": {},
        "budget_fallbacks": {},
        "access_group_ids": [],
    }


def _update_one(state: FakeState, body: Any) -> dict[str, Any]:
    """The shared core of /user/update and /user/bulk_update; answers {"user_id", "data"}."""
    body = validate_fields(body)
    if "blocked" in body:
        message = "Authentication Error, Could not find field at `upsertOneLiteLLM_UserTable.create.blocked`"
        raise envelope_error(400, message, "auth_error", "None")
    check_budget_duration(body.get("budget_duration"))
    user = _user_to_update(state, body)
    changes = {name: body[name] for name in _UPDATABLE if name in body and _applies(name, body[name])}
    state.set_user_fields(user, changes)
    return {"user_id": user["user_id"], "data": state.user_row(user)}


def _applies(name: str, value: Any) -> bool:
    # LiteLLM drops nulls, [] and {} from an update, except that a null clears a budget or limit.
    if value is None:
        return name in _CLEARABLE
    return value not in ([], {})


def _user_to_update(state: FakeState, body: dict[str, Any]) -> dict[str, Any]:
    user_id = body.get("user_id")
    if user_id:
        return state.users.get(user_id) or state.insert_user(user_id)
    user = state.user_by_email(body.get("user_email"))
    if user is None:
        # Recorded: an update by an unknown email crashes inside LiteLLM and answers this 400.
        message = "Authentication Error, 'LiteLLM_UserTable' object has no attribute 'get'"
        raise envelope_error(400, message, "auth_error", "None")
    return user


def user_update(state: FakeState, request: FakeRequest) -> Any:
    """POST /user/update: upsert by user_id, or update by an existing user_email."""
    return _update_one(state, request.body)


def user_bulk_update(state: FakeState, request: FakeRequest) -> Any:
    """POST /user/bulk_update: each user updated on its own, failures reported per user."""
    requested = (request.body or {}).get("users") or []
    results = [_bulk_result(state, entry) for entry in requested]
    ok = sum(1 for result in results if result["success"])
    return {
        "results": results,
        "total_requested": len(results),
        "successful_updates": ok,
        "failed_updates": len(results) - ok,
    }


def _bulk_result(state: FakeState, entry: Any) -> dict[str, Any]:
    ids = {"user_id": entry.get("user_id"), "user_email": entry.get("user_email")} if isinstance(entry, dict) else {}
    try:
        updated = _update_one(state, entry)
    except FakeError as error:
        return {**ids, "success": False, "error": str(error.body), "updated_user": None}
    return {**ids, "success": True, "error": None, "updated_user": updated}


def user_info(state: FakeState, request: FakeRequest) -> Any:
    """GET /user/info: 200 for any stored user (upserts included), 404 otherwise."""
    user_id = request.query.get("user_id")
    user = state.users.get(user_id or "")
    if user is None:
        raise envelope_error(404, f"User {user_id} not found", "internal_server_error")
    keys = [
        {**state.key_info_row(record), "team_alias": _team_alias(state, record["team_id"])}
        for record in state.keys_of(user["user_id"])
    ]
    teams = [_user_team_row(state, state.teams[team_id], user["user_id"]) for team_id in user["teams"]]
    info = state.user_row(user, organization_memberships=[])
    info["model_max_budget_usage"] = {}
    return {"user_id": user["user_id"], "user_info": info, "keys": keys, "teams": teams}


def _team_alias(state: FakeState, team_id: str | None) -> str:
    team = state.teams.get(team_id or "")
    # Recorded: a key without a team shows the string "None" here.
    return str(team["team_alias"]) if team else "None"


def _user_team_row(state: FakeState, team: dict[str, Any], user_id: str) -> dict[str, Any]:
    row = shapes.render(shapes.TEAM_NEW, **team)
    membership = state.team_memberships[team["team_id"]].get(user_id)
    row["team_memberships"] = [dict(membership)] if membership else []
    row["keys"] = []
    return row


def user_list(state: FakeState, request: FakeRequest) -> Any:
    """GET /user/list: newest first, paged (page_size <= 100), filtered by ids, role or email."""
    query = request.query
    page, size = page_number(query), page_size(query, "page_size", 25)
    if any(query.get(name) for name in ("user_ids", "role", "user_email")):
        matching = _filtered_users(state, query)
        total = len(matching)
        users = matching[(page - 1) * size : page * size]
    else:
        total = state.user_count()
        users = state.users_newest_first(page, size)
    return {
        "users": [state.user_list_row(user) for user in users],
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": math.ceil(total / size),
    }


def _filtered_users(state: FakeState, query: dict[str, str]) -> list[dict[str, Any]]:
    if query.get("user_ids"):
        wanted = _ids_matching(state, query["user_ids"])
        users = [state.users[uid] for uid in sorted(wanted, key=state.creation_rank, reverse=True)]
    else:
        users = state.users_newest_first(1, state.user_count())
    if query.get("role"):
        users = [user for user in users if user["user_role"] == query["role"]]
    if query.get("user_email"):
        needle = query["user_email"].lower()
        users = [user for user in users if needle in (user["user_email"] or "").lower()]
    return users


def _ids_matching(state: FakeState, value: str) -> set[str]:
    """The users `/user/list?user_ids=` matches, as the real proxy does (checked on 1.108.7).

    The value is split on commas and each part trimmed; a single id is a case-insensitive substring match
    (`user1` finds `user10` and `USER1x`), several ids match exactly.
    """
    ids = [part.strip() for part in value.split(",") if part.strip()]
    if len(ids) == 1:
        needle = ids[0].lower()
        return {user_id for user_id in state.users if needle in user_id.lower()}
    return {user_id for user_id in ids if user_id in state.users}


def user_delete(state: FakeState, request: FakeRequest) -> Any:
    """POST /user/delete: all or nothing; 404 names the first unknown id; answers the count."""
    user_ids = (request.body or {}).get("user_ids") or []
    for user_id in user_ids:
        if user_id not in state.users:
            raise detail_error(404, f"User not found, passed user_id={user_id}")
    for user_id in dict.fromkeys(user_ids):
        state.remove_user(user_id)
    return len(set(user_ids))


USER_ROUTES = {
    ("POST", "/user/new"): user_new,
    ("POST", "/user/update"): user_update,
    ("POST", "/user/bulk_update"): user_bulk_update,
    ("GET", "/user/info"): user_info,
    ("GET", "/user/list"): user_list,
    ("POST", "/user/delete"): user_delete,
}
