"""The fake's /team/* endpoints, answering as LiteLLM 1.108.7 (without an Enterprise licence) did."""

from __future__ import annotations

import uuid
from typing import Any

from syncd.testing import _shapes as shapes
from syncd.testing._fake_state import FakeError, FakeState, detail_error, envelope_error, timestamp
from syncd.testing._fake_users import FakeRequest, validate_fields

__all__ = ["TEAM_ROUTES", "TRIAL_NOTICE"]

TRIAL_NOTICE = (
    "You must be a LiteLLM Enterprise user to use this feature. If you have a license please set "
    "`LITELLM_LICENSE` in your env. Get a 7 day trial key here: https://www.litellm.ai/enterprise#trial. "
    "\nPricing: https://www.litellm.ai/#pricing"
)
_TEAM_FIELDS = ("team_alias", "models", "max_budget", "budget_duration", "tpm_limit", "rpm_limit", "metadata")


def _team(state: FakeState, team_id: Any) -> dict[str, Any]:
    team = state.teams.get(team_id) if isinstance(team_id, str) else None
    if team is None:
        message = f"Team doesn't exist in db. Team={team_id}. Create team via `/team/new` call."
        raise detail_error(404, message)
    return team


def _team_row(state: FakeState, team: dict[str, Any]) -> dict[str, Any]:
    return shapes.render(shapes.TEAM_NEW, **_copied_members(team))


def _team_table(team: dict[str, Any]) -> dict[str, Any]:
    return shapes.render(shapes.TEAM_TABLE, **_copied_members(team))


def _copied_members(team: dict[str, Any]) -> dict[str, Any]:
    return {**team, "members_with_roles": [dict(member) for member in team["members_with_roles"]]}


def team_new(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/new: 400 on a duplicate team_id (aliases may repeat)."""
    body = validate_fields(request.body)
    team_id = body.get("team_id")
    if team_id and team_id in state.teams:
        message = repr({"error": f"Team id = {team_id} already exists. Please use a different team id."})
        raise envelope_error(400, message, "internal_server_error")
    fields = {name: body[name] for name in _TEAM_FIELDS if body.get(name) is not None}
    return _team_row(state, state.insert_team(team_id, **fields))


def team_update(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/update: the given fields, nulls ignored."""
    body = validate_fields(request.body)
    team = _team(state, body.get("team_id"))
    team.update({name: body[name] for name in (*_TEAM_FIELDS, "blocked") if body.get(name) is not None})
    team["updated_at"] = timestamp()
    return {"team_id": team["team_id"], "data": _team_table(team)}


def team_info(state: FakeState, request: FakeRequest) -> Any:
    """GET /team/info: the team, its keys and memberships (with each member's budget source)."""
    team_id = request.query.get("team_id")
    team = state.teams.get(team_id or "")
    if team is None:
        message = repr({"message": f"Team not found, passed team id: {team_id}."})
        raise envelope_error(404, message, "auth_error", "None")
    info = {**_team_row(state, team), **shapes.TEAM_INFO_EXTRA, "caller_edit_access": {"kind": "unrestricted"}}
    info["members_with_roles"] = [_with_alias(state, member) for member in team["members_with_roles"]]
    memberships = [
        {**membership, "budget_source": "custom" if membership["budget_id"] else "none"}
        for membership in state.team_memberships[team["team_id"]].values()
    ]
    keys = [state.key_info_row(record) for record in state.team_keys(team["team_id"])]
    return {"team_id": team["team_id"], "team_info": info, "keys": keys, "team_memberships": memberships}


def _with_alias(state: FakeState, member: dict[str, Any]) -> dict[str, Any]:
    user = state.users.get(member["user_id"] or "")
    return {**member, "user_alias": user["user_alias"] if user else None}


def team_list(state: FakeState, request: FakeRequest) -> Any:
    """GET /team/list: every team (or a user's teams), newest first, with memberships and keys."""
    user_id = request.query.get("user_id")
    teams = state.teams_newest_first()
    if user_id:
        teams = [team for team in teams if user_id in state.team_memberships[team["team_id"]]]
    return [_listed_team(state, team) for team in teams]


def _listed_team(state: FakeState, team: dict[str, Any]) -> dict[str, Any]:
    row = _team_row(state, team)
    row["team_memberships"] = [dict(m) for m in state.team_memberships[team["team_id"]].values()]
    row["keys"] = [state.key_info_row(record) for record in state.team_keys(team["team_id"])]
    return row


def team_member_add(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/member_add: all members or none; admins need Enterprise; a duplicate is a 400."""
    body = validate_fields(request.body)
    team = _team(state, body.get("team_id"))
    members = body.get("member")
    members = members if isinstance(members, list) else [members or {}]
    for member in members:
        _check_new_member(state, team, member)
    before = {uid: state.user_list_row(state.users[uid], with_key_count=False) for uid in _known_ids(state, members)}
    updated_users, memberships = [], []
    for member in members:
        user = _member_user(state, member, team["team_id"])
        memberships.append(dict(state.add_member(team, user, member.get("role") or "user")))
        _set_member_budget(state, team["team_id"], user["user_id"], body.get("max_budget_in_team"))
        # Recorded: an existing user is shown as they were before joining, a new one as created.
        updated_users.append(before.get(user["user_id"]) or state.user_list_row(user, with_key_count=False))
    return {**_team_row(state, team), "updated_users": updated_users, "updated_team_memberships": memberships}


def _check_new_member(state: FakeState, team: dict[str, Any], member: dict[str, Any]) -> None:
    user_id, email, role = member.get("user_id"), member.get("user_email"), member.get("role") or "user"
    if role == "admin":
        got = f"Got=user_id={user_id!r} user_email={email!r} role={role!r}. "
        raise detail_error(400, f"Assigning team admins is a premium feature. {got}{TRIAL_NOTICE}. ")
    user = state.users.get(user_id) if user_id else state.user_by_email(email)
    if user and user["user_id"] in state.team_memberships[team["team_id"]]:
        existing = ", ".join(
            f"Member(user_id={m['user_id']!r}, user_email={m['user_email']!r}, role={m['role']!r})"
            for m in team["members_with_roles"]
        )
        message = f"User already in team. Member: user_id={user_id}, user_email={email}. Existing members=[{existing}]"
        raise envelope_error(400, message, "team_member_already_in_team", "member")


def _known_ids(state: FakeState, members: list[dict[str, Any]]) -> list[str]:
    found = [state.users.get(m.get("user_id") or "") or state.user_by_email(m.get("user_email")) for m in members]
    return [user["user_id"] for user in found if user]


def _member_user(state: FakeState, member: dict[str, Any], team_id: str) -> dict[str, Any]:
    user_id, email = member.get("user_id"), member.get("user_email")
    user = state.users.get(user_id) if user_id else state.user_by_email(email)
    # LiteLLM creates a user it does not know yet, as an internal_user.
    return user or state.insert_user(user_id, user_email=email, user_role="internal_user")


def _set_member_budget(state: FakeState, team_id: str, user_id: str, max_budget: float | None) -> None:
    if max_budget is None:
        return
    budget_id = str(uuid.uuid4())
    table = shapes.render(shapes.BUDGET_TABLE, budget_id=budget_id, max_budget=max_budget, created_at=timestamp())
    state.team_memberships[team_id][user_id].update(budget_id=budget_id, litellm_budget_table=table)


def team_member_delete(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/member_delete: 400 when the user is not a member."""
    body = request.body or {}
    team = _team(state, body.get("team_id"))
    user = state.users.get(body.get("user_id") or "") or state.user_by_email(body.get("user_email"))
    if user is None or user["user_id"] not in state.team_memberships[team["team_id"]]:
        raise detail_error(400, "User not found in team")
    state.drop_member(team["team_id"], user["user_id"])
    return _team_row(state, team)


def team_member_update(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/member_update: budget and limits of a member; making an admin needs Enterprise."""
    body = validate_fields(request.body)
    team = _team(state, body.get("team_id"))
    if body.get("role") == "admin":
        message = (
            "Assigning team admins is a premium feature. You must be a LiteLLM Enterprise user to use this feature."
            " If you have a license please set `LITELLM_LICENSE` in your env. Get a 7 day trial key here:"
            " https://www.litellm.ai/#trial. Pricing: https://www.litellm.ai/#pricing"
        )
        raise FakeError(400, {"detail": message})
    user_id = body.get("user_id")
    if user_id not in state.team_memberships[team["team_id"]]:
        raise detail_error(400, "User not found in team")
    _set_member_budget(state, team["team_id"], user_id, body.get("max_budget_in_team"))
    echoed = {
        name: body.get(name) for name in ("user_id", "user_email", "max_budget_in_team", "tpm_limit", "rpm_limit")
    }
    return shapes.render(shapes.MEMBER_UPDATE, **echoed, team_id=team["team_id"])


def _set_team_blocked(state: FakeState, request: FakeRequest, blocked: bool) -> Any:
    team = _team(state, (request.body or {}).get("team_id"))
    team["blocked"] = blocked
    team["updated_at"] = timestamp()
    return _team_table(team)


def team_block(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/block."""
    return _set_team_blocked(state, request, True)


def team_unblock(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/unblock."""
    return _set_team_blocked(state, request, False)


def team_delete(state: FakeState, request: FakeRequest) -> Any:
    """POST /team/delete {"team_ids": [...]}: all or nothing, with the teams' keys."""
    team_ids = (request.body or {}).get("team_ids") or []
    for team_id in team_ids:
        _team(state, team_id)
    for team_id in dict.fromkeys(team_ids):
        state.remove_team(team_id)
    return {"deleted_teams": team_ids}


TEAM_ROUTES = {
    ("POST", "/team/new"): team_new,
    ("POST", "/team/update"): team_update,
    ("GET", "/team/info"): team_info,
    ("GET", "/team/list"): team_list,
    ("POST", "/team/member_add"): team_member_add,
    ("POST", "/team/member_delete"): team_member_delete,
    ("POST", "/team/member_update"): team_member_update,
    ("POST", "/team/block"): team_block,
    ("POST", "/team/unblock"): team_unblock,
    ("POST", "/team/delete"): team_delete,
}
