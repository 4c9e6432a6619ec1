"""The LiteLLM admin API client: one method per endpoint syncd uses, typed errors, retries with backoff.

`LiteLLM` is the interface the rest of syncd uses: reads answer typed data (`CurrentUser`, `CurrentTeam`,
`CurrentKey`), parsed here and nowhere else; writes take the request bodies the plan holds. `LiteLLMClient`
satisfies it over HTTP, against the real proxy or the fake (`syncd.testing.fake_litellm`).

The only module that talks HTTP to LiteLLM. It is synchronous and thread-safe (one `httpx.Client`), so apply
can call it from a thread pool. Every error LiteLLM answers with is normalised once, here, into a clean
message and one of these exceptions:

    LiteLLMError                 .status .message .endpoint .retryable
     ├── RetryableError          5xx, 429, timeouts, connection errors: retried with backoff, then raised
     └── TerminalError           every other 4xx: never retried
          ├── AuthError          401, 403
          ├── NotFoundError      404
          ├── ConflictError      409
          └── InvalidRequestError 400, 422
               ├── AlreadyMemberError     /team/member_add: "User already in team"
               ├── NotMemberError         /team/member_delete: "User not found in team"
               └── EnterpriseFeatureError a 400/403 saying the feature needs LiteLLM Enterprise

LiteLLM's error bodies come in four shapes, all reduced to one human message:
`{"error": {"message": ...}}` (the message itself may be a repr'd dict: "{'error': 'User with id x already
exists'}"), `{"detail": {"error": ...}}`, `{"detail": "..."}` and FastAPI's `{"detail": [{"loc", "msg"}]}`
("body.user_role: Input should be ..."). The master key never appears in a message, a repr or a log line.
"""

from __future__ import annotations

import ast
import email.utils
import math
import random
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx

from syncd.fields import USER_FIELDS
from syncd.model import CurrentKey, CurrentTeam, CurrentUser

__all__ = [
    "AlreadyMemberError",
    "AuthError",
    "ConflictError",
    "EnterpriseFeatureError",
    "InvalidRequestError",
    "LiteLLM",
    "LiteLLMClient",
    "LiteLLMError",
    "NotFoundError",
    "NotMemberError",
    "RetryableError",
    "TerminalError",
    "UserPage",
    "current_key",
    "current_team",
    "current_user",
]

#: the team settings syncd reads and keeps in step on its own teams
TEAM_FIELDS = ("team_alias", "models", "max_budget", "budget_duration", "tpm_limit", "rpm_limit")

MAX_PAGE_SIZE = 100  # LiteLLM answers 422 above this
OnCall = Callable[[str, int | None, float], None]


# --- errors ------------------------------------------------------------------------------------------------------
class LiteLLMError(Exception):
    """A call to LiteLLM failed; `status` is None when no HTTP answer came back."""

    retryable = False

    def __init__(
        self, message: str, *, status: int | None = None, endpoint: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s  # what LiteLLM's Retry-After asked for, if it sent one

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"LiteLLM {self.endpoint}{status}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, endpoint={self.endpoint!r}, message={self.message!r})"


class RetryableError(LiteLLMError):
    """A failure worth retrying: 5xx, 429, a timeout or a connection error."""

    retryable = True


class TerminalError(LiteLLMError):
    """A 4xx answer: retrying would get the same answer."""


class AuthError(TerminalError):
    """401 or 403: the key is wrong or not allowed to do this."""


class NotFoundError(TerminalError):
    """404: the user, key or team does not exist."""


class ConflictError(TerminalError):
    """409: the user_id or email is taken."""


class InvalidRequestError(TerminalError):
    """400 or 422: LiteLLM refused the payload."""


class AlreadyMemberError(InvalidRequestError):
    """The user is already a member of the team."""


class NotMemberError(InvalidRequestError):
    """The user is not a member of the team."""


class EnterpriseFeatureError(InvalidRequestError):
    """The request needs a LiteLLM Enterprise licence (team admins, SCIM, ...)."""


def _message_of(body: Any) -> str | None:
    """The human message inside any of LiteLLM's error envelopes, or None if there is none."""
    if isinstance(body, dict) and "error" in body:
        inner = body["error"]
        return _unwrap(inner.get("message", inner) if isinstance(inner, dict) else inner)
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):
            return "; ".join(_validation_line(item) for item in detail)
        return _unwrap(detail)
    return None


def _unwrap(value: Any) -> str:
    """A message that may be a dict, or a Python-repr'd dict ("{'error': '...'}"), as plain text."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        text: str = value
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    if isinstance(value, dict):
        for name in ("error", "message", "msg", "detail"):
            if name in value:
                return _unwrap(value[name])
    return str(value).strip()


def _validation_line(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = ".".join(str(part) for part in item.get("loc") or [])
    return f"{location}: {item.get('msg')}" if location else str(item.get("msg"))


def _error_class(status: int, message: str) -> type[LiteLLMError]:
    lowered = message.lower()
    if status >= 500 or status == 429:
        return RetryableError
    if status in (400, 403) and ("premium feature" in lowered or "enterprise" in lowered):
        return EnterpriseFeatureError
    if status == 400 and "already in team" in lowered:
        return AlreadyMemberError
    if status == 400 and "not found in team" in lowered:
        return NotMemberError
    by_status: dict[int, type[LiteLLMError]] = {
        400: InvalidRequestError,
        401: AuthError,
        403: AuthError,
        404: NotFoundError,
        409: ConflictError,
        422: InvalidRequestError,
    }
    return by_status.get(status, TerminalError)


def _listable(user_id: str) -> bool:
    """True when /user/list?user_ids= can name this id (no comma, nothing its trimming would remove)."""
    return bool(user_id) and "," not in user_id and user_id == user_id.strip()


@dataclass(frozen=True)
class UserPage:
    """One page of /user/list."""

    users: list[dict[str, Any]]
    total: int
    page: int
    total_pages: int


# --- what LiteLLM answers, typed ----------------------------------------------------------------------------------
def current_user(data: Mapping[str, Any]) -> CurrentUser:
    """A LiteLLM /user/list or /user/info user as syncd compares it."""
    fields = {name: data.get(name) for name in USER_FIELDS if name != "metadata"}
    return CurrentUser(str(data["user_id"]), data.get("user_email"), fields, data.get("metadata") or {})


def current_team(data: Mapping[str, Any]) -> CurrentTeam:
    """A /team/list entry as the planner compares it."""
    members = {
        str(m["user_id"]): str(m.get("role") or "user")
        for m in data.get("members_with_roles") or ()
        if isinstance(m, Mapping) and m.get("user_id")
    }
    budgets: dict[str, float | None] = {}
    for membership in data.get("team_memberships") or ():
        table = membership.get("litellm_budget_table")
        if "litellm_budget_table" not in membership or (table is None and membership.get("budget_id")):
            continue  # the budget was not included in the answer: unknown, so never "drifted"
        budgets[str(membership.get("user_id"))] = table.get("max_budget") if isinstance(table, Mapping) else None
    return CurrentTeam(
        team_id=str(data["team_id"]),
        alias=data.get("team_alias"),
        fields={name: data.get(name) for name in TEAM_FIELDS},
        metadata=data.get("metadata") or {},
        members=members,
        member_budgets=budgets,
    )


def current_key(data: Mapping[str, Any]) -> CurrentKey:
    """A /key/list key (full object) as syncd blocks and unblocks it."""
    return CurrentKey(str(data["token"]), bool(data.get("blocked")))


class LiteLLM(Protocol):
    """What syncd reads from and writes to LiteLLM (`LiteLLMClient` over HTTP, to the real proxy or the fake)."""

    def read_users(self, user_ids: Iterable[str]) -> list[CurrentUser]: ...
    def read_all_users(self) -> Iterator[CurrentUser]: ...
    def read_users_with_email(self, email: str) -> list[CurrentUser]: ...
    def user_count(self) -> int: ...
    def read_keys(self, user_id: str) -> list[CurrentKey]: ...
    def read_teams(self) -> list[CurrentTeam]: ...
    def new_user(self, payload: dict[str, Any]) -> object: ...
    def update_user(self, payload: dict[str, Any]) -> object: ...
    def delete_users(self, user_ids: Iterable[str]) -> None: ...
    def block_key(self, key_or_token: str) -> object: ...
    def unblock_key(self, key_or_token: str) -> object: ...
    def new_team(self, payload: dict[str, Any]) -> object: ...
    def update_team(self, payload: dict[str, Any]) -> object: ...
    def team_member_add(
        self, team_id: str, user_id: str, *, role: str = "user", max_budget_in_team: float | None = None
    ) -> object: ...
    def team_member_delete(self, team_id: str, user_id: str) -> None: ...
    def team_member_update(
        self, team_id: str, user_id: str, *, role: str | None = None, max_budget_in_team: float | None = None
    ) -> object: ...


# --- the client --------------------------------------------------------------------------------------------------
class LiteLLMClient:
    """A synchronous, thread-safe client of LiteLLM's admin API (users, keys, teams)."""

    def __init__(
        self,
        base_url: str,
        master_key: str,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 10.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        self.base_url = str(base_url).rstrip("/")
        self._master_key = master_key
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._on_call = on_call
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {master_key}"},
            timeout=timeout_s,
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            transport=transport,
        )

    @classmethod
    def from_settings(
        cls, settings: Any, *, on_call: OnCall | None = None, max_retries: int | None = None
    ) -> LiteLLMClient:
        """A client for the `litellm:` settings (verify with `ca_file` when set); ValueError without a master key."""
        key = settings.master_key
        if key is None:
            raise ValueError("litellm.master_key (or master_key_file) is not set")
        verify: bool | str = str(settings.ca_file) if settings.ca_file else settings.verify_tls
        return cls(
            settings.url,
            key.get_secret_value(),
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries if max_retries is None else max_retries,
            verify=verify,
            on_call=on_call,
        )

    def __repr__(self) -> str:
        return f"LiteLLMClient(base_url={self.base_url!r})"

    def __enter__(self) -> LiteLLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- transport, retries, errors ----------------------------------------------------------------------------
    def _call(self, method: str, endpoint: str, *, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        """One API call with retries; answers the decoded JSON body or raises a LiteLLMError."""
        url = endpoint + _query_string(query)
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(method, endpoint, url, body)
            except RetryableError as error:
                if attempt >= self.max_retries:
                    raise
                time.sleep(self._backoff(attempt, error))
        raise AssertionError("unreachable")

    def _attempt(self, method: str, endpoint: str, url: str, body: Any) -> Any:
        started = time.perf_counter()
        status: int | None = None
        try:
            response = self._http.request(method, url, json=body)
            status = response.status_code
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timed out ({type(exc).__name__})", endpoint=endpoint) from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection failed: {self._scrub(str(exc))}", endpoint=endpoint) from None
        finally:
            if self._on_call is not None:
                self._on_call(endpoint, status, time.perf_counter() - started)
        if response.is_success:
            return _json_of(response)
        raise self._error(endpoint, response)

    def _error(self, endpoint: str, response: httpx.Response) -> LiteLLMError:
        try:
            message = _message_of(response.json())
        except ValueError:
            message = None
        text = message or response.text.strip()[:500] or response.reason_phrase or "no body"
        text = self._scrub(text)
        error_class = _error_class(response.status_code, text)
        return error_class(text, status=response.status_code, endpoint=endpoint, retry_after_s=_retry_after(response))

    def _scrub(self, text: str) -> str:
        return text.replace(self._master_key, "***") if self._master_key else text

    def _backoff(self, attempt: int, error: LiteLLMError) -> float:
        """Exponential backoff with full jitter; a Retry-After from LiteLLM wins, within backoff_max_s."""
        if error.retry_after_s is not None:
            return min(error.retry_after_s, self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return random.uniform(0, ceiling)

    # --- users -------------------------------------------------------------------------------------------------
    def new_user(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /user/new (409 ConflictError if the user_id or email exists)."""
        return dict(self._call("POST", "/user/new", body=payload))

    def update_user(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /user/update (an upsert by user_id; send metadata whole: it is replaced)."""
        return dict(self._call("POST", "/user/update", body=payload))

    def user_info(self, user_id: str) -> dict[str, Any] | None:
        """GET /user/info: the user's answer (user_info, keys, teams), or None if there is no such user."""
        try:
            return dict(self._call("GET", "/user/info", query={"user_id": user_id}))
        except NotFoundError:
            return None

    def list_users(
        self,
        *,
        page: int = 1,
        page_size: int = MAX_PAGE_SIZE,
        user_ids: Sequence[str] | None = None,
        email: str | None = None,
    ) -> UserPage:
        """GET /user/list: one page, newest first; page_size is capped at 100."""
        query: dict[str, Any] = {"page": page, "page_size": min(page_size, MAX_PAGE_SIZE)}
        if user_ids is not None:
            query["user_ids"] = ",".join(user_ids)
        if email is not None:
            query["user_email"] = email
        answer = self._call("GET", "/user/list", query=query)
        return UserPage(
            users=list(answer.get("users") or []),
            total=int(answer.get("total") or 0),
            page=int(answer.get("page") or page),
            total_pages=int(answer.get("total_pages") or 0),
        )

    def get_users(self, user_ids: Iterable[str], *, batch: int = MAX_PAGE_SIZE) -> list[dict[str, Any]]:
        """The users with these ids that exist, read with /user/list?user_ids= in batches.

        LiteLLM splits that filter on commas and trims each part, and matches a single id as a case-insensitive
        substring: ids it cannot express (a comma, surrounding spaces) are read one by one with /user/info, and
        only users whose id is exactly one asked for are returned.
        """
        wanted = list(dict.fromkeys(user_ids))
        listable = [user_id for user_id in wanted if _listable(user_id)]
        size = max(1, min(batch, MAX_PAGE_SIZE))
        asked = set(wanted)
        found: list[dict[str, Any]] = []
        for start in range(0, len(listable), size):
            found.extend(u for u in self._all_pages(listable[start : start + size]) if u.get("user_id") in asked)
        for user_id in wanted:
            if not _listable(user_id):
                info = self.user_info(user_id)
                user = (info or {}).get("user_info")
                if isinstance(user, dict) and user.get("user_id") == user_id:
                    found.append(user)
        return found

    def users_with_email(self, email: str) -> list[dict[str, Any]]:
        """The users holding this email, compared case-insensitively (LiteLLM's filter is a substring match)."""
        wanted = email.lower()
        return [u for u in self._all_pages(None, email=email) if (u.get("user_email") or "").lower() == wanted]

    def _all_pages(self, user_ids: Sequence[str] | None, *, email: str | None = None) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            result = self.list_users(page=page, page_size=MAX_PAGE_SIZE, user_ids=user_ids, email=email)
            yield from result.users
            if page >= result.total_pages or not result.users:
                return
            page += 1

    def iter_all_users(self, *, page_size: int = MAX_PAGE_SIZE, parallel: int = 4) -> Iterator[dict[str, Any]]:
        """Every user: page 1 first, then the other pages read in parallel threads, yielded in page order."""
        first = self.list_users(page=1, page_size=page_size)
        seen = {str(user.get("user_id")) for user in first.users}
        yield from first.users
        pages = range(2, first.total_pages + 1)
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="litellm-list") as pool:
            for result in pool.map(lambda page: self.list_users(page=page, page_size=page_size), pages):
                # A user created while paging shifts the newest-first pages: skip the repeats it causes.
                fresh = [user for user in result.users if str(user.get("user_id")) not in seen]
                seen.update(str(user.get("user_id")) for user in fresh)
                yield from fresh

    def read_users(self, user_ids: Iterable[str]) -> list[CurrentUser]:
        """The users with these ids that exist (see `get_users`), typed."""
        return [current_user(user) for user in self.get_users(user_ids)]

    def read_all_users(self) -> Iterator[CurrentUser]:
        """Every user (see `iter_all_users`), typed."""
        return map(current_user, self.iter_all_users())

    def read_users_with_email(self, email: str) -> list[CurrentUser]:
        """The users holding this email (see `users_with_email`), typed."""
        return [current_user(user) for user in self.users_with_email(email)]

    def user_count(self) -> int:
        """How many users LiteLLM holds (one page of /user/list)."""
        return self.list_users(page=1, page_size=1).total

    def delete_users(self, user_ids: Iterable[str]) -> None:
        """POST /user/delete (users and their keys); a user already gone is not an error."""
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), MAX_PAGE_SIZE):
            chunk = ids[start : start + MAX_PAGE_SIZE]
            try:
                self._call("POST", "/user/delete", body={"user_ids": chunk})
            except NotFoundError:
                # LiteLLM refuses the whole batch for one unknown id: delete the rest one by one.
                if len(chunk) > 1:
                    self.delete_users_one_by_one(chunk)

    def delete_users_one_by_one(self, user_ids: Iterable[str]) -> None:
        """Delete users one call each, ignoring those already gone."""
        for user_id in user_ids:
            try:
                self._call("POST", "/user/delete", body={"user_ids": [user_id]})
            except NotFoundError:
                continue

    # --- keys --------------------------------------------------------------------------------------------------
    def generate_key(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /key/generate: a new key (the raw `key` is only ever shown in this answer)."""
        return dict(self._call("POST", "/key/generate", body=payload))

    def list_keys(self, user_id: str) -> list[dict[str, Any]]:
        """Every key of a user (full objects: `token` is the hash, plus `key_alias`, `blocked`...)."""
        keys: list[dict[str, Any]] = []
        page = 1
        while True:
            query = {"user_id": user_id, "return_full_object": "true", "page": page, "size": MAX_PAGE_SIZE}
            answer = self._call("GET", "/key/list", query=query)
            keys.extend(key for key in answer.get("keys") or [] if isinstance(key, dict))
            if page >= int(answer.get("total_pages") or 0):
                return keys
            page += 1

    def read_keys(self, user_id: str) -> list[CurrentKey]:
        """Every key of a user, typed."""
        return [current_key(key) for key in self.list_keys(user_id) if key.get("token")]

    def block_key(self, key_or_token: str) -> dict[str, Any]:
        """POST /key/block, by raw key or hashed token."""
        return dict(self._call("POST", "/key/block", body={"key": key_or_token}))

    def unblock_key(self, key_or_token: str) -> dict[str, Any]:
        """POST /key/unblock, by raw key or hashed token."""
        return dict(self._call("POST", "/key/unblock", body={"key": key_or_token}))

    def delete_keys(self, keys: Sequence[str]) -> None:
        """POST /key/delete."""
        self._call("POST", "/key/delete", body={"keys": list(keys)})

    # --- teams -------------------------------------------------------------------------------------------------
    def new_team(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /team/new (a duplicate team_id is a 400 InvalidRequestError; aliases may repeat)."""
        return dict(self._call("POST", "/team/new", body=payload))

    def update_team(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /team/update."""
        return dict(self._call("POST", "/team/update", body=payload))

    def team_info(self, team_id: str) -> dict[str, Any] | None:
        """GET /team/info, or None if there is no such team."""
        try:
            return dict(self._call("GET", "/team/info", query={"team_id": team_id}))
        except NotFoundError:
            return None

    def list_teams(self) -> list[dict[str, Any]]:
        """GET /team/list: every team (find one by alias here: aliases are not unique in LiteLLM)."""
        return list(self._call("GET", "/team/list"))

    def read_teams(self) -> list[CurrentTeam]:
        """Every team (see `list_teams`), typed."""
        return [current_team(team) for team in self.list_teams()]

    def team_member_add(
        self, team_id: str, user_id: str, *, role: str = "user", max_budget_in_team: float | None = None
    ) -> dict[str, Any]:
        """POST /team/member_add (AlreadyMemberError if they are; role admin needs Enterprise)."""
        body: dict[str, Any] = {"team_id": team_id, "member": {"role": role, "user_id": user_id}}
        if max_budget_in_team is not None:
            body["max_budget_in_team"] = max_budget_in_team
        return dict(self._call("POST", "/team/member_add", body=body))

    def team_member_delete(self, team_id: str, user_id: str) -> None:
        """POST /team/member_delete (NotMemberError if they are not a member)."""
        self._call("POST", "/team/member_delete", body={"team_id": team_id, "user_id": user_id})

    def team_member_update(
        self, team_id: str, user_id: str, *, role: str | None = None, max_budget_in_team: float | None = None
    ) -> dict[str, Any]:
        """POST /team/member_update: a member's role or budget in the team."""
        body: dict[str, Any] = {"team_id": team_id, "user_id": user_id}
        if role is not None:
            body["role"] = role
        if max_budget_in_team is not None:
            body["max_budget_in_team"] = max_budget_in_team
        return dict(self._call("POST", "/team/member_update", body=body))

    def delete_teams(self, team_ids: Sequence[str]) -> None:
        """POST /team/delete."""
        self._call("POST", "/team/delete", body={"team_ids": list(team_ids)})


if TYPE_CHECKING:  # mypy checks that the client satisfies the interface the rest of syncd is typed with
    _SATISFIES: type[LiteLLM] = LiteLLMClient


def _query_string(query: dict[str, Any] | None) -> str:
    """The query, percent-encoded (a space as %20: LiteLLM's /user/info reads the raw query)."""
    if not query:
        return ""
    return "?" + "&".join(f"{quote(str(name), safe='')}={quote(str(value), safe='')}" for name, value in query.items())


def _json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
