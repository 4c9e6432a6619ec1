"""The HTTP surface of the service provider: a FastAPI router to mount at /scim/v2.

Every response is `application/scim+json` and every failure a SCIM Error body (401, 404, 405, 409, 412, 413, 400
with its scimType, 500). Bodies are read raw (plain JSON and application/scim+json alike) up to
`scim.max_body_bytes`; the blocking store work runs in the thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from scim2_models import (
    InvalidFilterException,
    InvalidValueException,
    NotFoundException,
    PayloadTooLargeException,
    SCIMException,
    UnauthorizedException,
)
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.responses import Response

from syncd.scim.auth import TokenRing
from syncd.scim.door import MAX_INTEGER, parse_json
from syncd.scim.errors import MethodNotAllowed, ScimResponse, error_response, status_error
from syncd.scim.oauth import AccessTokens
from syncd.scim.resources import project
from syncd.scim.schemas import ResourceKind, discovery_documents
from syncd.scim.service import ListQuery, ScimService
from syncd.settings.scim import ScimSettings
from syncd.store.scim import StoreUnavailable

if TYPE_CHECKING:
    from syncd.metrics import Metrics

__all__ = ["ScimRoute", "make_router"]

_log = logging.getLogger("syncd.scim")
_OTHER_METHODS = ["POST", "PUT", "PATCH", "DELETE"]
_ALL_METHODS = ["GET", *_OTHER_METHODS]
_NO_TOKEN = frozenset({"missing", "malformed"})
_UNAVAILABLE = "the store is unavailable; send the request again later"


class ScimRoute(APIRoute):
    """A route whose SCIM exceptions (and any other) become SCIM Error responses, counted in the metrics."""

    metrics: Any = None

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        """A method this route does not take (TRACE, QUERY, HEAD, ...) is a SCIM 405, before authentication."""
        if self.methods and scope["method"] not in self.methods:
            detail = f"{scope['method']} is not allowed on SCIM endpoints"
            response = error_response(MethodNotAllowed(detail=detail), {"Allow": ", ".join(sorted(self.methods))})
            _count(self.metrics, "other", "other", response.status_code)  # any method name: not a label value
            await response(scope, receive, send)
            return
        await super().handle(scope, receive, send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler: render errors, count the request."""
        handler = super().get_route_handler()
        resource = self.path.strip("/").split("/")[0] if self.path.strip("/") else "root"

        async def scim_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SCIMException as exc:
                response = _refusal(exc, self.metrics)
            except StoreUnavailable as exc:
                _log.warning("SCIM %s %s: the database is unavailable (%s)", request.method, request.url.path, exc)
                response = error_response(status_error(503, _UNAVAILABLE), {"Retry-After": "5"})
            except Exception:
                _log.exception("SCIM %s %s failed", request.method, request.url.path)
                response = error_response(status_error(500, "internal error"))
            _count(self.metrics, request.method, resource, response.status_code)
            return response

        return scim_handler


def _refusal(exc: SCIMException, metrics: Any) -> Response:
    headers = None
    if isinstance(exc, UnauthorizedException):
        reason = str(exc.context.get("reason", "invalid"))
        # RFC 6750 §3.1: a token presented but refused is invalid_token (a client then gets a new one)
        challenge = 'Bearer realm="syncd SCIM"' + (', error="invalid_token"' if reason not in _NO_TOKEN else "")
        headers = {"WWW-Authenticate": challenge}
        counter = getattr(metrics, "scim_auth_failures", None)
        if counter is not None:
            counter.labels(reason=reason).inc()
    return error_response(exc, headers)


def _count(metrics: Any, method: str, resource: str, status: int) -> None:
    counter = getattr(metrics, "scim_requests", None)
    if counter is not None:
        counter.labels(method=method, resource=resource, status=str(status)).inc()


class _Api:
    """The endpoints, closed over the service, the token ring and the settings."""

    def __init__(self, settings: ScimSettings, service: ScimService) -> None:
        self.settings = settings
        self.service = service
        self.tokens = TokenRing(settings.tokens, AccessTokens(settings) if settings.oauth_active else None)
        self._discovery: dict[str, Any] = {}

    # helpers

    def source(self, request: Request) -> str:
        return self.tokens.source(request.headers.get("authorization"))

    def base_url(self, request: Request, relative: str) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        tail = relative.format(**request.path_params)
        path = request.scope.get("path", "")
        prefix = path[: len(path) - len(tail)] if path.endswith(tail) else ""
        return f"{request.url.scheme}://{request.url.netloc}{prefix}"

    async def body(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeException(detail=f"the body is larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeException(detail=f"the body is larger than {limit} bytes")
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    def discovery(self, base_url: str) -> dict[str, Any]:
        if base_url not in self._discovery:
            if len(self._discovery) > 16:
                self._discovery.clear()
            self._discovery[base_url] = discovery_documents(
                base_url, self.settings.max_results, oauth=self.settings.oauth_active
            )
        return self._discovery[base_url]

    # discovery endpoints

    async def service_provider_config(self, request: Request) -> Response:
        _only_get(request)
        self.source(request)
        return ScimResponse(self.discovery(self.base_url(request, "/ServiceProviderConfig"))["config"])

    async def schemas(self, request: Request) -> Response:
        _only_get(request)
        self.source(request)
        found = list(self.discovery(self.base_url(request, "/Schemas"))["schemas"].values())
        return ScimResponse(_listing(found))

    async def schema(self, request: Request, id: str) -> Response:
        _only_get(request)
        self.source(request)
        schemas = self.discovery(self.base_url(request, "/Schemas/{id}"))["schemas"]
        return ScimResponse(_one(schemas, id, "Schema"))

    async def resource_types(self, request: Request) -> Response:
        _only_get(request)
        self.source(request)
        found = list(self.discovery(self.base_url(request, "/ResourceTypes"))["resource_types"].values())
        return ScimResponse(_listing(found))

    async def resource_type(self, request: Request, id: str) -> Response:
        _only_get(request)
        self.source(request)
        types = self.discovery(self.base_url(request, "/ResourceTypes/{id}"))["resource_types"]
        return ScimResponse(_one(types, id, "ResourceType"))

    # resources

    def kind(self, collection: str) -> ResourceKind:
        return self.service.users_kind if collection == "Users" else self.service.groups_kind

    async def collection(self, request: Request, collection: str) -> Response:
        source = self.source(request)
        base = self.base_url(request, f"/{collection}")
        kind = self.kind(collection)
        if request.method == "GET":
            query = _query_from_params(request)
            result = await run_in_threadpool(self.service.list_resources, kind, source, query, base)
            return ScimResponse(_shaped_list(result, kind, query))
        if request.method != "POST":
            raise MethodNotAllowed()
        payload = await self.body(request)
        create = self.service.create_user if collection == "Users" else self.service.create_group
        created = await run_in_threadpool(create, source, payload, base)
        return _resource_response(created, kind, request, status=201)

    async def search(self, request: Request, collection: str) -> Response:
        source = self.source(request)
        _only(request, "POST")
        base = self.base_url(request, f"/{collection}/.search")
        query = _query_from_body(await self.body(request))
        kind = self.kind(collection)
        result = await run_in_threadpool(self.service.list_resources, kind, source, query, base)
        return ScimResponse(_shaped_list(result, kind, query))

    async def search_all(self, request: Request) -> Response:
        source = self.source(request)
        _only(request, "POST")
        base = self.base_url(request, "/.search")
        query = _query_from_body(await self.body(request))
        result = await run_in_threadpool(self.service.search_all, source, query, base)
        shaped = [
            project(item, self.kind(item["meta"]["resourceType"] + "s"), query.attributes, query.excluded)
            for item in result["Resources"]
        ]
        return ScimResponse({**result, "Resources": shaped})

    async def resource(self, request: Request, collection: str, id: str) -> Response:
        source = self.source(request)
        base = self.base_url(request, f"/{collection}/{{id}}")
        kind, users = self.kind(collection), collection == "Users"
        if_match = request.headers.get("if-match")
        if request.method == "GET":
            query = _query_from_params(request)
            if users:
                found = await run_in_threadpool(self.service.get_user, source, id, base)
            else:
                members = _wants_members(query)
                found = await run_in_threadpool(self.service.get_group, source, id, base, members=members)
            if _not_modified(request, found):
                return Response(status_code=304, headers={"ETag": found["meta"]["version"]})
            return _resource_response(found, kind, request, query=query)
        if request.method == "DELETE":
            delete = self.service.delete_user if users else self.service.delete_group
            await run_in_threadpool(delete, source, id, if_match)
            return Response(status_code=204)
        if request.method not in ("PUT", "PATCH"):
            raise MethodNotAllowed()
        payload = await self.body(request)
        if request.method == "PUT":
            write = self.service.replace_user if users else self.service.replace_group
        else:
            write = self.service.patch_user if users else self.service.patch_group
        changed = await run_in_threadpool(write, source, id, payload, base, if_match)
        return _resource_response(changed, kind, request)

    async def not_found(self, request: Request, rest: str) -> Response:
        self.source(request)
        raise NotFoundException(detail=f"no SCIM endpoint /{rest}")


def _only_get(request: Request) -> None:
    _only(request, "GET")


def _only(request: Request, method: str) -> None:
    if request.method != method:
        raise MethodNotAllowed(detail=f"{request.method} is not allowed here; use {method}")


def _listing(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": len(resources),
        "startIndex": 1,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def _one(documents: dict[str, Any], id: str, what: str) -> Any:
    for key, document in documents.items():
        if key.lower() == id.lower():
            return document
    raise NotFoundException(detail=f"no {what} {id}")


def _names(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidValueException(detail=f"{name} is a list of attribute names")
    return [item.strip() for item in value if item.strip()]


def _integer(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidValueException(detail=f"{name} must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidValueException(detail=f"{name} must be an integer") from None
    if abs(number) > MAX_INTEGER:
        raise InvalidValueException(detail=f"{name} is outside 64 bits")
    return number


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if name == "filter":
        raise InvalidFilterException(detail="the filter must be a string")
    raise InvalidValueException(detail=f"{name} must be a string")


def _query(get: Callable[[str], Any]) -> ListQuery:
    order = (_text(get("sortOrder"), "sortOrder") or "ascending").lower()
    if order not in ("ascending", "descending"):
        raise InvalidValueException(detail="sortOrder is ascending or descending")
    attributes = _names(get("attributes"), "attributes")
    excluded = _names(get("excludedAttributes"), "excludedAttributes")
    return ListQuery(
        filter=_text(get("filter"), "filter"),
        sort_by=_text(get("sortBy"), "sortBy"),
        descending=order == "descending",
        start_index=_integer(get("startIndex"), "startIndex") or 1,
        count=_integer(get("count"), "count"),
        attributes=attributes,
        excluded=excluded,
    )


_NO_QUERY = ListQuery()


def _query_from_params(request: Request) -> ListQuery:
    if not request.scope.get("query_string"):
        return _NO_QUERY
    params = {key.lower(): value for key, value in request.query_params.items()}
    return _query(lambda name: params.get(name.lower()))


def _query_from_body(payload: Any) -> ListQuery:
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidValueException(detail="a search body is a SearchRequest object")
    params = {key.lower(): value for key, value in payload.items()}
    return _query(lambda name: params.get(name.lower()))


def _wants_members(query: ListQuery) -> bool:
    if query.attributes:
        return any(name.lower().rsplit(":", 1)[-1].startswith("members") for name in query.attributes)
    return not any(name.lower().rsplit(":", 1)[-1] == "members" for name in query.excluded)


def _shaped_list(result: dict[str, Any], kind: ResourceKind, query: ListQuery) -> dict[str, Any]:
    if not query.attributes and not query.excluded:
        return result
    shaped = [project(item, kind, query.attributes, query.excluded) for item in result["Resources"]]
    return {**result, "Resources": shaped}


def _resource_response(
    body: dict[str, Any], kind: ResourceKind, request: Request, *, status: int = 200, query: ListQuery | None = None
) -> Response:
    query = query or _query_from_params(request)
    headers = {"ETag": body["meta"]["version"], "Location": body["meta"]["location"]}
    shaped = project(body, kind, query.attributes, query.excluded)
    return ScimResponse(shaped, status_code=status, headers=headers)


def _not_modified(request: Request, body: dict[str, Any]) -> bool:
    wanted = request.headers.get("if-none-match")
    if not wanted:
        return False
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in wanted.split(",")}
    return "*" in tags or body["meta"]["version"].removeprefix("W/").strip('"') in tags


class _Anything(PathConvertor):
    """Starlette's path convertor, newlines included (so that every path under /scim/v2 gets a SCIM answer)."""

    regex = r"[\s\S]*"


def make_router(settings: ScimSettings, service: ScimService, metrics: Metrics | None = None) -> APIRouter:
    """The router over `service`: discovery, Users, Groups, searches, and a SCIM 404 for anything else."""
    register_url_convertor("anything", _Anything())
    route_class = type("BoundScimRoute", (ScimRoute,), {"metrics": metrics})
    router = APIRouter(route_class=route_class)
    api = _Api(settings, service)
    add = router.add_api_route
    # routes are tried in order: the resources (nearly every request an identity provider makes) come first
    for collection in ("Users", "Groups"):
        add(f"/{collection}/.search", _bind(api.search, collection), methods=_ALL_METHODS, include_in_schema=False)
        add(f"/{collection}", _bind(api.collection, collection), methods=_ALL_METHODS, include_in_schema=False)
        add(f"/{collection}/{{id}}", _bind(api.resource, collection), methods=_ALL_METHODS, include_in_schema=False)
    add("/ServiceProviderConfig", api.service_provider_config, methods=_ALL_METHODS, include_in_schema=False)
    add("/Schemas", api.schemas, methods=_ALL_METHODS, include_in_schema=False)
    add("/Schemas/{id:anything}", api.schema, methods=_ALL_METHODS, include_in_schema=False)
    add("/ResourceTypes", api.resource_types, methods=_ALL_METHODS, include_in_schema=False)
    add("/ResourceTypes/{id}", api.resource_type, methods=_ALL_METHODS, include_in_schema=False)
    add("/.search", api.search_all, methods=_ALL_METHODS, include_in_schema=False)
    add("/{rest:anything}", api.not_found, methods=_ALL_METHODS, include_in_schema=False)
    return router


def _bind(endpoint: Callable[..., Awaitable[Response]], collection: str) -> Callable[..., Awaitable[Response]]:
    if endpoint.__name__ == "resource":

        async def with_id(request: Request, id: str) -> Response:
            return await endpoint(request, collection, id)

        return with_id

    async def without_id(request: Request) -> Response:
        return await endpoint(request, collection)

    return without_id
