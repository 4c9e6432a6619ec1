"""The in-memory state of the fake LiteLLM: users, keys, teams, their indexes, and the recorded error bodies.

Everything here runs on the event loop thread of the fake's ASGI app, one request at a time, so no locks.
Reads are O(page): users are indexed by user_id and lower-cased email and kept in creation order for paging.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.testing import _shapes as shapes

__all__ = [
    "ADMIN_USER_ID",
    "USER_ROLES",
    "Call",
    "FakeError",
    "FakeState",
    "detail_error",
    "envelope_error",
    "parse_budget_duration",
    "timestamp",
]

ADMIN_USER_ID = "default_user_id"
USER_ROLES = ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_NAMED_DURATIONS = {"hourly": "1h", "daily": "1d", "weekly": "7d", "monthly": "30d", "1mo": "30d"}
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Fields of a user record the fake models; every one of them is a key of the recorded user row.
_USER_FIELDS = [
    "user_id",
    "user_alias",
    "teams",
    "user_role",
    "max_budget",
    "spend",
    "user_email",
    "models",
    "metadata",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "budget_duration",
    "budget_reset_at",
    "created_at",
    "updated_at",
]


class FakeError(Exception):
    """An HTTP error answer of the fake: status, JSON body and optional headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def envelope_error(status: int, message: str, type_: str, param: str | None = None) -> FakeError:
    """LiteLLM's `{"error": {message, type, param, code}}` envelope."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": str(status)}}
    return FakeError(status, body)


def detail_error(status: int, message: str) -> FakeError:
    """LiteLLM's `{"detail": {"error": ...}}` envelope (HTTPException with a dict detail)."""
    return FakeError(status, {"detail": {"error": message}})


def timestamp(moment: datetime | None = None) -> str:
    """A timestamp as LiteLLM prints it: milliseconds, padded to microseconds, with a Z."""
    moment = moment or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000 * 1000:06d}Z"


def parse_budget_duration(value: str) -> timedelta | None:
    """The length of a LiteLLM budget_duration, or None when LiteLLM would refuse it."""
    match = _DURATION.match(_NAMED_DURATIONS.get(value, value))
    if not match:
        return None
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    # LiteLLM computes the next reset in Python: a duration that ends past datetime's year 9999 is refused (400)
    if seconds >= (datetime.max.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds():
        return None
    return timedelta(seconds=seconds)


def budget_reset_at(duration: str | None) -> str | None:
    """When a budget with this duration next resets (LiteLLM aligns it; the fake does not bother)."""
    length = parse_budget_duration(duration) if duration else None
    return timestamp(datetime.now(UTC) + length) if length else None


@dataclass(frozen=True)
class Call:
    """One request the fake answered: method, path (no query), the status it answered with, and the JSON body it
    was sent (None without one; not compared)."""

    method: str
    path: str
    status: int
    body: Any = field(default=None, compare=False)


@dataclass
class FakeState:
    """Users, keys and teams of the fake, with the indexes that keep every request O(page)."""

    master_key: str
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    teams: dict[str, dict[str, Any]] = field(default_factory=dict)
    team_memberships: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _order: list[str] = field(default_factory=list)  # user ids, oldest first
    _order_seq: list[int] = field(default_factory=list)  # their creation numbers: sorted, for bisect
    _seq: dict[str, int] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    #: lower-cased email -> the ids of the users holding it, oldest first (/user/update lets two users share one)
    _by_email: dict[str, dict[str, None]] = field(default_factory=dict)
    _user_keys: dict[str, list[str]] = field(default_factory=dict)
    _team_keys: dict[str, list[str]] = field(default_factory=dict)
    _raw_keys: dict[str, str] = field(default_factory=dict)
    _raw_by_token: dict[str, str] = field(default_factory=dict)
    _team_order: list[str] = field(default_factory=list)
    _rate_windows: dict[str, list[Any]] = field(default_factory=dict)

    # --- users -------------------------------------------------------------------------------------------
    def user_by_email(self, email: str | None) -> dict[str, Any] | None:
        """The user with this email, compared case-insensitively as LiteLLM does."""
        holders = self._by_email.get(email.lower()) if email else None
        return self.users.get(next(iter(holders))) if holders else None

    def insert_user(self, user_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Store a new user (no checks); fields are those of the recorded user row."""
        unknown = set(fields) - set(_USER_FIELDS)
        if unknown:
            raise KeyError(f"not a user field: {sorted(unknown)}")
        now = timestamp()
        user: dict[str, Any] = {
            "user_id": user_id or str(uuid.uuid4()),
            "user_alias": None,
            "teams": [],
            "user_role": None,
            "max_budget": None,
            "spend": 0.0,
            "user_email": None,
            "models": [],
            "metadata": {},
            "max_parallel_requests": None,
            "tpm_limit": None,
            "rpm_limit": None,
            "budget_duration": None,
            "budget_reset_at": None,
            "created_at": now,
            "updated_at": now,
        }
        user.update(fields)
        user["budget_reset_at"] = budget_reset_at(user["budget_duration"])
        self.users[user["user_id"]] = user
        self._seq[user["user_id"]] = next(self._counter)
        self._order.append(user["user_id"])
        self._order_seq.append(self._seq[user["user_id"]])
        self._index_email(user, None)
        return user

    def set_user_fields(self, user: dict[str, Any], changes: dict[str, Any]) -> None:
        """Apply changes to a stored user, keeping the email index and budget reset time right."""
        old_email = user.get("user_email")
        user.update(changes)
        if "budget_duration" in changes:
            user["budget_reset_at"] = budget_reset_at(user["budget_duration"])
        user["updated_at"] = timestamp()
        self._index_email(user, old_email)

    def _index_email(self, user: dict[str, Any], old_email: str | None) -> None:
        if old_email:
            holders = self._by_email.get(old_email.lower(), {})
            holders.pop(user["user_id"], None)
            if not holders:
                self._by_email.pop(old_email.lower(), None)
        if user.get("user_email"):
            self._by_email.setdefault(user["user_email"].lower(), {})[user["user_id"]] = None

    def remove_user(self, user_id: str) -> None:
        """Hard-delete a user with their keys and team memberships, as /user/delete does."""
        user = self.users.pop(user_id)
        position = bisect.bisect_left(self._order_seq, self._seq.pop(user_id))
        del self._order[position], self._order_seq[position]
        self._index_email({"user_id": user_id, "user_email": None}, user.get("user_email"))
        for token in list(self._user_keys.get(user_id, [])):
            self.remove_key(token)
        self._user_keys.pop(user_id, None)
        for team_id in user["teams"]:
            self.drop_member(team_id, user_id)

    def users_newest_first(self, page: int, page_size: int) -> list[dict[str, Any]]:
        """One page of all users, newest first (LiteLLM's order), in O(page_size)."""
        end = len(self._order) - (page - 1) * page_size
        start = max(end - page_size, 0)
        return [self.users[uid] for uid in reversed(self._order[start : max(end, 0)])]

    def creation_rank(self, user_id: str) -> int:
        """A sort key giving creation order."""
        return self._seq[user_id]

    def user_count(self) -> int:
        """How many users there are."""
        return len(self._order)

    def key_count(self, user_id: str) -> int:
        """How many keys a user owns."""
        return len(self._user_keys.get(user_id, ()))

    def user_row(self, user: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """The user row of /user/update and /user/info (`data`, `user_info`)."""
        return shapes.render(shapes.USER_ROW, **{**user, "teams": list(user["teams"])}, **extra)

    def user_list_row(self, user: dict[str, Any], *, with_key_count: bool = True) -> dict[str, Any]:
        """The user row of /user/list (and, without key_count, of member_add's updated_users)."""
        row = shapes.render(shapes.USER_LIST_ROW, **{**user, "teams": list(user["teams"])})
        if with_key_count:
            row["key_count"] = self.key_count(user["user_id"])
        else:
            del row["key_count"]
        return row

    # --- keys --------------------------------------------------------------------------------------------
    def insert_key(self, user_id: str | None, *, generated: bool = True, **fields: Any) -> dict[str, Any]:
        """Store a new key and answer its record; `generated` is False for keys /user/new creates."""
        raw = fields.pop("key", None) or "sk-" + secrets.token_urlsafe(16)
        token = hashlib.sha256(raw.encode()).hexdigest()
        now = timestamp()
        creator = ADMIN_USER_ID if generated else None
        record: dict[str, Any] = {
            "token": token,
            "key_name": f"sk-...{raw[-4:]}",
            "key_alias": None,
            "models": [],
            "user_id": user_id,
            "team_id": None,
            "metadata": {},
            "blocked": None,
            "tpm_limit": None,
            "rpm_limit": None,
            "max_budget": None,
            "budget_duration": None,
            "key_type": "default" if generated else None,
            "created_at": now,
            "created_by": creator,
            "updated_at": now,
            "updated_by": creator,
            "settings_updated_at": None,
        }
        record.update(fields)
        self.keys[token] = record
        self._raw_keys[raw] = token
        self._raw_by_token[token] = raw
        if user_id:
            self._user_keys.setdefault(user_id, []).append(token)
        if record["team_id"]:
            self._team_keys.setdefault(record["team_id"], []).append(token)
        return record

    def find_key(self, key_or_token: str | None) -> dict[str, Any] | None:
        """A key record by its raw `sk-...` value or by its hashed token."""
        if not key_or_token:
            return None
        token = self._raw_keys.get(key_or_token, key_or_token)
        return self.keys.get(token)

    def raw_key(self, record: dict[str, Any]) -> str:
        """The raw key string of a key record."""
        return self._raw_by_token[record["token"]]

    def remove_key(self, token: str) -> None:
        """Delete one key."""
        record = self.keys.pop(token)
        del self._raw_keys[self._raw_by_token.pop(token)]
        for index, owner in ((self._user_keys, record["user_id"]), (self._team_keys, record["team_id"])):
            owned = index.get(owner or "", [])
            if token in owned:
                owned.remove(token)

    def keys_of(self, user_id: str) -> list[dict[str, Any]]:
        """A user's keys, oldest first."""
        return [self.keys[token] for token in self._user_keys.get(user_id, [])]

    def rate_window(self, token: str) -> list[Any]:
        """The [window start, request count] of a key's requests-per-minute limit."""
        return self._rate_windows.setdefault(token, [None, 0])

    def key_info_row(self, record: dict[str, Any]) -> dict[str, Any]:
        """A key as /key/unblock, /user/info and /team/info show it."""
        return shapes.render(shapes.KEY_INFO, **record)

    def key_table_row(self, record: dict[str, Any]) -> dict[str, Any]:
        """A key as /key/block and /key/list show it."""
        return shapes.render(shapes.KEY_TABLE, **record)

    # --- teams -------------------------------------------------------------------------------------------
    def insert_team(self, team_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Store a new team whose only member is the admin who created it, as LiteLLM does."""
        now = timestamp()
        team: dict[str, Any] = {
            "team_id": team_id or str(uuid.uuid4()),
            "team_alias": None,
            "members_with_roles": [{"user_id": ADMIN_USER_ID, "user_email": None, "role": "admin"}],
            "metadata": {},
            "tpm_limit": None,
            "rpm_limit": None,
            "max_budget": None,
            "budget_duration": None,
            "budget_reset_at": None,
            "models": [],
            "blocked": False,
            "created_at": now,
            "updated_at": now,
        }
        team.update(fields)
        team["budget_reset_at"] = budget_reset_at(team["budget_duration"])
        self.teams[team["team_id"]] = team
        self._team_order.append(team["team_id"])
        self.team_memberships[team["team_id"]] = {ADMIN_USER_ID: self._membership(team["team_id"], ADMIN_USER_ID)}
        return team

    def remove_team(self, team_id: str) -> None:
        """Delete a team, its memberships and its keys."""
        self.teams.pop(team_id)
        self._team_order.remove(team_id)
        for user_id in self.team_memberships.pop(team_id, {}):
            user = self.users.get(user_id)
            if user and team_id in user["teams"]:
                user["teams"].remove(team_id)
        for token in list(self._team_keys.pop(team_id, [])):
            self.remove_key(token)

    def teams_newest_first(self) -> list[dict[str, Any]]:
        """Every team, newest first (LiteLLM's order)."""
        return [self.teams[team_id] for team_id in reversed(self._team_order)]

    def _membership(self, team_id: str, user_id: str) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "team_id": team_id,
            "budget_id": None,
            "spend": 0.0,
            "total_spend": 0.0,
            "litellm_budget_table": None,
        }

    def add_member(self, team: dict[str, Any], user: dict[str, Any], role: str) -> dict[str, Any]:
        """Make a user a member of a team; answers the new membership row."""
        team_id = team["team_id"]
        member = {"user_id": user["user_id"], "user_email": user["user_email"], "role": role}
        team["members_with_roles"].append(member)
        team["updated_at"] = timestamp()
        if team_id not in user["teams"]:
            user["teams"].append(team_id)
        membership = self._membership(team_id, user["user_id"])
        self.team_memberships[team_id][user["user_id"]] = membership
        return membership

    def drop_member(self, team_id: str, user_id: str) -> None:
        """Remove a user from a team (nothing if they are not a member)."""
        team = self.teams.get(team_id)
        if team:
            team["members_with_roles"] = [m for m in team["members_with_roles"] if m["user_id"] != user_id]
        self.team_memberships.get(team_id, {}).pop(user_id, None)
        user = self.users.get(user_id)
        if user and team_id in user["teams"]:
            user["teams"].remove(team_id)

    def team_keys(self, team_id: str) -> list[dict[str, Any]]:
        """The keys of a team, oldest first."""
        return [self.keys[token] for token in self._team_keys.get(team_id, [])]
