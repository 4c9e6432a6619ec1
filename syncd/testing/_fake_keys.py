"""The fake's /key/* endpoints, answering as LiteLLM 1.108.7 did in the recordings."""

from __future__ import annotations

import math
from typing import Any

from syncd.testing import _shapes as shapes
from syncd.testing._fake_state import FakeState, envelope_error, timestamp
from syncd.testing._fake_users import FakeRequest, check_budget_duration, page_number, page_size, validate_fields

__all__ = ["KEY_ROUTES"]

_KEY_FIELDS = ("key_alias", "models", "team_id", "metadata", "tpm_limit", "rpm_limit", "max_budget", "budget_duration")


def key_generate(state: FakeState, request: FakeRequest) -> Any:
    """POST /key/generate: a new `sk-` key for a user (and team)."""
    body = validate_fields(request.body)
    check_budget_duration(body.get("budget_duration"))
    fields = {name: body[name] for name in _KEY_FIELDS if body.get(name) is not None}
    if body.get("key"):
        fields["key"] = body["key"]
    record = state.insert_key(body.get("user_id"), **fields)
    answer_fields = {name: value for name, value in record.items() if name != "settings_updated_at"}
    return shapes.render(
        shapes.GENERATED_KEY,
        **answer_fields,
        key=state.raw_key(record),
        token_id=record["token"],
        duration=body.get("duration"),
        router_settings=dict(shapes.ROUTER_SETTINGS),
    )


def _existing_key(state: FakeState, key: Any) -> dict[str, Any]:
    record = state.find_key(key if isinstance(key, str) else None)
    if record is None:
        raise envelope_error(404, "Key not found in database", "not_found_error", "key")
    return record


def key_info(state: FakeState, request: FakeRequest) -> Any:
    """GET /key/info?key=: the key with `status: revoked` when blocked."""
    record = _existing_key(state, request.query.get("key"))
    info = state.key_info_row(record)
    info["created_at"], info["updated_at"] = (_plus_offset(info["created_at"]), _plus_offset(info["updated_at"]))
    info["settings_updated_at"] = _plus_offset(info["settings_updated_at"])
    del info["token"]
    if record["blocked"]:
        info["status"] = "revoked"
    return {"key": request.query["key"], "info": info}


def _plus_offset(stamp: str | None) -> str | None:
    # /key/info prints its timestamps with +00:00 where the other endpoints print Z.
    return stamp[:-1] + "+00:00" if stamp else None


def _set_blocked(state: FakeState, request: FakeRequest, blocked: bool) -> dict[str, Any]:
    record = _existing_key(state, (request.body or {}).get("key"))
    record["blocked"] = blocked
    record["updated_at"] = record["settings_updated_at"] = timestamp()
    return record


def key_block(state: FakeState, request: FakeRequest) -> Any:
    """POST /key/block by raw key or token."""
    return state.key_table_row(_set_blocked(state, request, True))


def key_unblock(state: FakeState, request: FakeRequest) -> Any:
    """POST /key/unblock by raw key or token."""
    return state.key_info_row(_set_blocked(state, request, False))


def key_delete(state: FakeState, request: FakeRequest) -> Any:
    """POST /key/delete {"keys": [...]}: all or nothing."""
    keys = (request.body or {}).get("keys") or []
    records = [_existing_key(state, key) for key in keys]
    for record in records:
        state.remove_key(record["token"])
    return {"deleted_keys": keys}


def key_list(state: FakeState, request: FakeRequest) -> Any:
    """GET /key/list: a user's (or team's) keys, newest first, paged by page/size."""
    query = request.query
    page, size = page_number(query), page_size(query, "size", 10)
    if query.get("user_id"):
        records = list(reversed(state.keys_of(query["user_id"])))
    else:
        records = list(reversed(state.keys.values()))
    if query.get("team_id"):
        records = [record for record in records if record["team_id"] == query["team_id"]]
    chosen = records[(page - 1) * size : page * size]
    full = query.get("return_full_object", "false").lower() == "true"
    keys = [_full_key(state, record) if full else record["token"] for record in chosen]
    return {
        "keys": keys,
        "total_count": len(records),
        "current_page": page,
        "total_pages": math.ceil(len(records) / size),
    }


def _full_key(state: FakeState, record: dict[str, Any]) -> dict[str, Any]:
    return {**state.key_table_row(record), **shapes.KEY_AUTH_EXTRA}


KEY_ROUTES = {
    ("POST", "/key/generate"): key_generate,
    ("GET", "/key/info"): key_info,
    ("POST", "/key/block"): key_block,
    ("POST", "/key/unblock"): key_unblock,
    ("POST", "/key/delete"): key_delete,
    ("GET", "/key/list"): key_list,
}
