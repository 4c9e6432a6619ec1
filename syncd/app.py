"""The HTTP side of `syncd serve`: `create_app(...)` builds the FastAPI app (nothing is built at import).

| path | what |
|---|---|
| /scim/v2/... | the SCIM 2.0 router, when `scim.enabled`; every answer under /scim is a SCIM one (errors included) |
| /oauth/token | OAuth 2.0 token endpoint (client credentials), when `scim.oauth_clients` and a signing key are set |
| /healthz | liveness: 200 while the process serves |
| /readyz | 200 when the database answers, the schema is at head and (if `server.ready_max_sync_age`) the last
  successful sync is recent enough; 503 with `{"status": "unready", "reason": ...}` otherwise |
| /metrics | Prometheus text format |
| /status | JSON (last runs, pending and failed changes, held plans, sources); needs `Authorization: Bearer <admin>` |
| / | the status page: aggregates for anyone; user ids, errors and held plans after POST /login with the admin token |
| /held/{id} | POST (status page form, admin session and its CSRF token): approve or reject a held plan |
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from html import escape as html_escape
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from scim2_models import PayloadTooLargeException
from starlette.exceptions import HTTPException

from syncd.metrics import Metrics
from syncd.scim.errors import error_response, status_error
from syncd.scim.token_endpoint import TOKEN_MAX_BYTES, TOKEN_PATH, oauth_error
from syncd.status import collect_status, render_page

__all__ = ["ADMIN_COOKIE", "LOGIN_MAX_BYTES", "BodyTooLarge", "create_app"]

log = logging.getLogger(__name__)

ADMIN_COOKIE = "syncd_admin"
#: POST /login carries one form field: anything longer is refused without being read further
LOGIN_MAX_BYTES = 4096
#: seconds the status page without details is served as rendered (it is public: a flood of it costs one query set)
_PUBLIC_PAGE_S = 1.0
_Scope = MutableMapping[str, Any]
_ASGI = Callable[[_Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class BodyTooLarge(PayloadTooLargeException):
    """The request body grew past the limit while it was read (a SCIM 413 under /scim, a plain 413 elsewhere)."""


def _is_scim(path: str) -> bool:
    return path == "/scim" or path.startswith("/scim/")


def _answer(path: str, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the shape of the API at `path`: SCIM's one renderer under /scim, RFC 6749's at /oauth/token, a
    plain JSON body elsewhere."""
    if _is_scim(path):
        return error_response(status_error(status, detail), headers)
    if path == TOKEN_PATH:
        return oauth_error(status, "invalid_request", detail, headers)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _refusal(scope: _Scope, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """A refusal at the door (see `_answer` for its shape); the connection then closes."""
    return _answer(str(scope.get("path", "")), status, detail, {"Connection": "close", **(headers or {})})


class _BodyLimit:
    """ASGI middleware bounding every request body, chunked ones included: the bytes are counted as they are read
    and reading stops at the limit (413, connection closed); nothing past it is ever buffered."""

    def __init__(self, app: _ASGI, limit: int, scim_limit: int | None = None) -> None:
        self.app, self.limit, self.scim_limit = app, limit, scim_limit if scim_limit is not None else limit

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self.scim_limit if _is_scim(path) else TOKEN_MAX_BYTES if path == TOKEN_PATH else self.limit
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            detail = "Content-Length is not a number" if not length.isdigit() else f"request body over {limit} bytes"
            await _refusal(scope, 400 if not length.isdigit() else 413, detail)(scope, receive, send)
            return
        read, started = 0, False

        async def counted_receive() -> Any:
            nonlocal read
            message = await receive()
            if message.get("type") == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise BodyTooLarge(detail=f"request body over {limit} bytes")
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
                if read > limit:  # a SCIM route rendered the refusal: do not read the rest of the body
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:
            if not started:
                await _refusal(scope, 413, str(exc.detail))(scope, receive, send)


class _Door:
    """ASGI middleware in front of everything, before authentication: a per-client request rate (token bucket, 429),
    and, under /scim, a SCIM Error for a path or query that holds a NUL. Constant work per request. (A method no
    SCIM route takes, TRACE or QUERY, is answered by the SCIM router itself, before authentication too.)"""

    _MAX_CLIENTS = 10_000

    def __init__(self, app: _ASGI, rate: float, burst: int) -> None:
        self.app, self.rate, self.burst = app, rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: _Scope) -> Response | None:
        wait = self._take(str((scope.get("client") or ("", 0))[0]))
        if wait:
            return _refusal(scope, 429, "too many requests from this client", {"Retry-After": str(wait)})
        if not _is_scim(str(scope.get("path", ""))):
            return None
        if "\x00" in str(scope.get("path", "")) or b"%00" in bytes(scope.get("query_string") or b""):
            return _refusal(scope, 400, "the path or query holds a NUL character")
        return None

    def _take(self, client: str) -> int:
        """0 when `client` may make a request now (one token taken), else the seconds until it may."""
        if self.rate <= 0:
            return 0
        now = time.monotonic()
        tokens, at = self.buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))
        if client not in self.buckets and len(self.buckets) >= self._MAX_CLIENTS:
            self._forget_idle(now)
        self.buckets[client] = (tokens - 1, now)
        return 0

    def _forget_idle(self, now: float) -> None:
        """Drop the clients whose bucket is full again (they are as good as new); all, if that is not enough."""
        full = [c for c, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for client in full:
            del self.buckets[client]
        if len(self.buckets) >= self._MAX_CLIENTS:
            self.buckets.clear()


class _Admin:
    """The admin token check: bearer header or the status page's cookie, compared in constant time."""

    def __init__(self, token: str | None) -> None:
        self.token = token if token and token.strip() else None  # an empty token is no token: the pages are off
        token = self.token
        digest = None if token is None else hmac.new(token.encode(), b"syncd-status-page", hashlib.sha256)
        self.cookie_value = None if digest is None else digest.hexdigest()
        # the forms' CSRF token: derived from the token, so only a page rendered for the admin session carries it
        csrf = None if token is None else hmac.new(token.encode(), b"syncd-status-form", hashlib.sha256)
        self.csrf = None if csrf is None else csrf.hexdigest()

    def bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        return self.token is not None and scheme.lower() == "bearer" and self.matches(presented.strip())

    def matches(self, presented: str) -> bool:
        if not presented or self.token is None:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def cookie_ok(self, request: Request) -> bool:
        value = request.cookies.get(ADMIN_COOKIE, "")
        return self.cookie_value is not None and hmac.compare_digest(value.encode(), self.cookie_value.encode())

    def csrf_ok(self, presented: str) -> bool:
        return self.csrf is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def create_app(
    settings: Any,
    *,
    store: Any,
    engine: Any,
    metrics: Metrics,
    worker: Any = None,
    leadership: Any = None,
    started_at: float | None = None,
) -> FastAPI:
    """The app: SCIM (when enabled), health, readiness, metrics, status JSON and page."""
    app = FastAPI(title="syncd", docs_url=None, redoc_url=None, openapi_url=None)
    token = settings.server.admin_token
    admin = _Admin(token.get_secret_value() if token is not None else None)
    started = time.time() if started_at is None else started_at
    _mount_scim(app, settings, engine, worker, metrics)
    _mount_oauth(app, settings, metrics)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        """Starlette's own 404 and 405 (a path no route knows, such as /scim/v2 itself), in the API's shape."""
        return _answer(request.url.path, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    _health_routes(app, settings, store, engine, started)
    _status_routes(app, store, admin, lambda: _replica(leadership, worker))
    _held_routes(app, store, admin, worker)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    server = settings.server
    app.add_middleware(_BodyLimit, limit=server.max_body_bytes, scim_limit=settings.scim.max_body_bytes)
    app.add_middleware(_Door, rate=server.rate_limit_per_s, burst=server.rate_limit_burst)
    return app


def _mount_scim(app: FastAPI, settings: Any, engine: Any, worker: Any, metrics: Metrics) -> None:
    if not settings.scim.enabled:
        return
    try:
        from syncd.scim import build_scim_router
    except ImportError as exc:
        log.error("scim.enabled is true but the SCIM service provider cannot be loaded (%s): /scim/v2 not served", exc)
        return
    on_write = worker.on_scim_write if worker is not None else None
    app.include_router(build_scim_router(settings, engine, on_write=on_write, metrics=metrics), prefix="/scim/v2")


def _mount_oauth(app: FastAPI, settings: Any, metrics: Metrics) -> None:
    scim = settings.scim
    if not scim.enabled or not scim.oauth_clients:
        return
    problem = scim.oauth.key_problem()
    if problem is not None:
        log.warning("scim.oauth.signing_key %s: OAuth is off, %s not served", problem, TOKEN_PATH)
        return
    from syncd.scim.oauth import ClientRegistry
    from syncd.scim.token_endpoint import token_endpoint

    app.add_route(TOKEN_PATH, token_endpoint(ClientRegistry(scim), metrics), methods=_HTTP_METHODS)


_HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _replica(leadership: Any, worker: Any) -> dict[str, Any]:
    from syncd.store.leader import replica_id

    return {
        "id": replica_id(),
        "leader": bool(leadership.held) if leadership is not None else True,
        "reconciling": bool(getattr(worker, "busy", False)),
    }


def _health_routes(app: FastAPI, settings: Any, store: Any, engine: Any, started: float) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        reason = _unready_reason(settings, store, engine, started)
        if reason is not None:
            return JSONResponse({"status": "unready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})


def _unready_reason(settings: Any, store: Any, engine: Any, started: float) -> str | None:
    from syncd.store import schema_revision

    try:
        current, head = schema_revision(engine)
    except Exception as exc:
        return f"database unreachable: {type(exc).__name__}: {_first_line(exc)}"
    if current != head:
        return f"database schema at {current or 'empty'}, needs {head}: run `syncd db upgrade`"
    limit = settings.server.ready_max_sync_age
    if limit is None:
        return None
    last = store.last_success_at()
    age = time.time() - max(last or 0.0, started)
    if age > limit:
        when = "no successful sync yet" if last is None else f"last successful sync {age:.0f} s ago"
        return f"{when} (server.ready_max_sync_age is {limit:.0f} s)"
    return None


def _status_routes(app: FastAPI, store: Any, admin: _Admin, replica: Callable[[], dict[str, Any]]) -> None:
    @app.get("/status", include_in_schema=False)
    def status(request: Request) -> JSONResponse:
        if admin.token is None:
            return JSONResponse({"detail": "server.admin_token is not set: /status is off"}, status_code=403)
        if not admin.bearer_ok(request):
            headers = {"WWW-Authenticate": 'Bearer realm="syncd"'}
            return JSONResponse({"detail": "admin token required"}, status_code=401, headers=headers)
        return JSONResponse(collect_status(store, detailed=True, replica=replica()))

    public: list[tuple[float, str]] = []  # the page without details, as last rendered

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        detailed = admin.cookie_ok(request) or admin.bearer_ok(request)
        if not detailed and public and time.monotonic() - public[0][0] < _PUBLIC_PAGE_S:
            return HTMLResponse(public[0][1], headers={"Cache-Control": "no-store"})
        data = collect_status(store, detailed=detailed, replica=replica()) | {"admin_login": admin.token is not None}
        if admin.cookie_ok(request):  # the forms post with the session cookie: only its pages carry the CSRF token
            data["csrf"] = admin.csrf
        html = render_page(data)
        if not detailed:  # anyone may ask for it: at most one rendering (and its queries) per second
            public[:] = [(time.monotonic(), html)]
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await _small_form(request)
        if form is None:
            return HTMLResponse("<p>Request too large.</p>", status_code=413, headers={"Connection": "close"})
        presented = (form.get("token") or [""])[0]
        if admin.cookie_value is None or not admin.matches(presented):
            return HTMLResponse("<p>Wrong admin token. <a href='/'>Back</a></p>", status_code=401)
        response = RedirectResponse("/", status_code=303)
        secure = request.url.scheme == "https"
        response.set_cookie(ADMIN_COOKIE, admin.cookie_value, httponly=True, samesite="strict", secure=secure)
        return response


async def _small_form(request: Request) -> dict[str, list[str]] | None:
    """The urlencoded form of a page's POST, read up to LOGIN_MAX_BYTES (None past it: nothing more is read)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_MAX_BYTES:
            return None
    return parse_qs(body.decode("utf-8", "replace"))


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin, else Sec-Fetch-Site)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = origin.split("://", 1)[-1]
        return host == request.headers.get("host", "")
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _held_routes(app: FastAPI, store: Any, admin: _Admin, worker: Any) -> None:
    @app.post("/held/{plan_id}", include_in_schema=False)
    async def decide(plan_id: str, request: Request) -> Response:
        """Approve or reject a held plan from the status page: the admin session, its CSRF token, same origin."""
        if admin.token is None:
            return HTMLResponse("<p>server.admin_token is not set: held plans are decided with the CLI.</p>", 403)
        if not admin.cookie_ok(request):  # before anything of the request is read or parsed
            return HTMLResponse("<p>Log in with the admin token first. <a href='/'>Back</a></p>", status_code=401)
        form = await _small_form(request)
        if form is None:
            return HTMLResponse("<p>Request too large.</p>", status_code=413, headers={"Connection": "close"})
        if not admin.csrf_ok((form.get("csrf") or [""])[0]) or not _same_origin(request):
            return HTMLResponse("<p>The form is not from this status page (CSRF check failed).</p>", 403)
        decision = {"approve": "approved", "reject": "rejected"}.get((form.get("decision") or [""])[0])
        if decision is None:
            return HTMLResponse("<p>decision must be approve or reject.</p>", status_code=400)
        if not plan_id.isdigit() or len(plan_id) > 18:
            return HTMLResponse("<p>No such held plan.</p>", status_code=404)
        note = (form.get("note") or [""])[0].strip()[:500] or None
        return await run_in_threadpool(_decide_held, store, worker, int(plan_id), decision, note)


def _decide_held(store: Any, worker: Any, plan_id: int, decision: str, note: str | None) -> Response:
    from syncd.store.repository import NotDecidable

    try:
        store.decide_held_plan(plan_id, decision, by="admin (status page)", note=note)
    except NotDecidable as exc:
        return HTMLResponse(f"<p>{html_escape(str(exc))}. <a href='/'>Back</a></p>", status_code=409)
    log.warning("held plan %d %s on the status page", plan_id, decision)
    if decision == "approved" and worker is not None:
        worker.request("approve")  # applied by that run if its inputs are unchanged, else held again
    return RedirectResponse(f"/#held-plan-{plan_id}", status_code=303)


def _first_line(exc: BaseException) -> str:
    from syncd.logs import scrub

    return scrub((str(exc).strip().splitlines() or [""])[0][:300])
