"""`POST /oauth/token`: the OAuth 2.0 token endpoint for the client credentials grant (RFC 6749 §4.4).

A request is a form (application/x-www-form-urlencoded, at most `TOKEN_MAX_BYTES`, each parameter once) with
`grant_type=client_credentials`; the client authenticates with HTTP Basic (client_id and secret form-encoded, then
base64, §2.3.1) or with `client_id` and `client_secret` in the form, never both. `scope` is accepted and ignored: a
token grants its client's SCIM source, nothing more. The answer is `{"access_token", "token_type": "Bearer",
"expires_in"}` or an RFC error (§5.2): `invalid_request` 400, `invalid_client` 401 with `WWW-Authenticate: Basic`,
`unsupported_grant_type` 400; never cached. The secret checks (scrypt) run in the thread pool, two at a time, with at
most `_MAX_WAITING` requests queued for them (more at once: 503 `temporarily_unavailable`, Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from syncd.scim.oauth import ClientRegistry

__all__ = ["TOKEN_MAX_BYTES", "TOKEN_PATH", "oauth_error", "token_endpoint"]

TOKEN_PATH = "/oauth/token"
#: a token request is a few short fields: anything longer is refused without being read further
TOKEN_MAX_BYTES = 4096
_MAX_ID, _MAX_SECRET = 200, 1024
#: token requests that may be in a secret check or wait for one (two run at once); more at the same time answer 503
_MAX_WAITING = 32
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="syncd", charset="UTF-8"'}
_log = logging.getLogger("syncd.oauth")


class _Refused(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.error, self.description, self.headers = status, error, description, headers


def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    """The JSON error body of RFC 6749 §5.2 (used by the door for refusals of /oauth/token too)."""
    body = {"error": error, "error_description": description}
    return JSONResponse(body, status_code=status, headers={**_NO_STORE, **(headers or {})})


def _invalid(description: str) -> _Refused:
    return _Refused(400, "invalid_request", description)


def _client_failed(description: str) -> _Refused:
    return _Refused(401, "invalid_client", description, _CHALLENGE)


async def _form(request: Request) -> dict[str, str]:
    """The form parameters, each given once; invalid_request naming what is wrong otherwise."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _invalid("the body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > TOKEN_MAX_BYTES:
            raise _Refused(413, "invalid_request", f"the body is larger than {TOKEN_MAX_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise _invalid("the body is not a valid form (ASCII, percent-encoded UTF-8, at most 20 fields)") from None
    form: dict[str, str] = {}
    for name, values in fields.items():
        if len(values) > 1:
            raise _invalid(f"{name[:40]} is given more than once")
        if "\x00" in name or "\x00" in values[0]:
            raise _invalid("the form holds a NUL character")
        form[name] = values[0]
    return form


def _basic(header: str) -> tuple[str, str]:
    """(client_id, secret) of an HTTP Basic header, each form-decoded (RFC 6749 §2.3.1)."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _client_failed("client authentication must use HTTP Basic or the form's client_id and client_secret")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        client_id, secret = unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")
    except (binascii.Error, UnicodeDecodeError):
        raise _client_failed("the Basic credentials are not valid base64 of UTF-8") from None
    if not colon:
        raise _client_failed("the Basic credentials must be client_id:client_secret")
    return client_id, secret


def _credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """The client's id and secret, from exactly one authentication method."""
    header = request.headers.get("authorization")
    if header is not None:
        if "client_secret" in form:
            raise _invalid("use one client authentication method: HTTP Basic or the form, not both")
        client_id, secret = _basic(header)
        if form.get("client_id", client_id) != client_id:
            raise _invalid("client_id in the form differs from the one of HTTP Basic")
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id or not secret:
        raise _client_failed("client authentication is required (HTTP Basic, or client_id and client_secret)")
    if len(client_id) > _MAX_ID or len(secret) > _MAX_SECRET:
        raise _client_failed("the client credentials are not valid")
    return client_id, secret


def token_endpoint(registry: ClientRegistry, metrics: Any = None) -> Callable[[Request], Awaitable[Response]]:
    """The ASGI endpoint of /oauth/token over `registry` (mount it for every method: a GET gets an RFC error)."""
    hashing = asyncio.Semaphore(2)  # scrypt is memory- and CPU-hard: at most two checks at once
    waiting = [0]  # requests queued for a check: past _MAX_WAITING a flood is answered at once, not queued

    async def authenticate(client_id: str, secret: str) -> tuple[Any, str] | None:
        if waiting[0] >= _MAX_WAITING:
            raise _Refused(503, "temporarily_unavailable", "too many token requests at once", {"Retry-After": "1"})
        waiting[0] += 1
        try:
            async with hashing:
                return await run_in_threadpool(registry.authenticate, client_id, secret)
        finally:
            waiting[0] -= 1

    async def token(request: Request) -> Response:
        try:
            if request.method != "POST":
                raise _Refused(405, "invalid_request", "the token endpoint takes POST", {"Allow": "POST"})
            form = await _form(request)
            grant = form.get("grant_type")
            if not grant:
                raise _invalid("grant_type is required")
            if grant != "client_credentials":
                raise _Refused(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
            client_id, secret = _credentials(request, form)
            found = await authenticate(client_id, secret)
            if found is None:
                _log.warning("token request refused: invalid client credentials", extra={"client_id": client_id[:80]})
                raise _client_failed("the client credentials are not valid")
            issued = registry.issue(*found)
        except _Refused as refused:
            _count(metrics, refused.error)
            return oauth_error(refused.status, refused.error, refused.description, refused.headers)
        _count(metrics, "issued")
        _log.info("access token issued", extra={"client_id": issued.client_id, "source": found[0].source})
        answer = {"access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in}
        return JSONResponse(answer, headers=_NO_STORE)

    return token


def _count(metrics: Any, outcome: str) -> None:
    counter = getattr(metrics, "oauth_token_requests", None)
    if counter is not None:
        counter.labels(outcome=outcome).inc()
