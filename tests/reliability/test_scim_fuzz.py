"""Schemathesis against the SCIM API served over HTTP: no 500, and every error a SCIM Error body.

syncd's SCIM routes are left out of FastAPI's OpenAPI (they read raw bodies), so the description fuzzed here is
written from RFC 7643/7644: Users, Groups, PATCH, searches and discovery, with their query parameters. Bounded:
`FUZZ_EXAMPLES` examples per operation in CI, more with --run-slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from syncd.app import create_app
from syncd.metrics import Metrics
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore
from syncd.testing import serve_in_thread

TOKEN = "fuzz-token-0c7d"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
FUZZ_EXAMPLES = 60

_STRING = {"type": "string"}
_EMAIL = {"type": "object", "properties": {"value": _STRING, "type": _STRING, "primary": {"type": "boolean"}}}
_USER = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": _STRING},
        "userName": _STRING,
        "externalId": _STRING,
        "displayName": _STRING,
        "active": {"type": "boolean"},
        "name": {"type": "object", "properties": {"givenName": _STRING, "familyName": _STRING}},
        "emails": {"type": "array", "items": _EMAIL},
    },
}
_GROUP = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": _STRING},
        "displayName": _STRING,
        "externalId": _STRING,
        "members": {"type": "array", "items": {"type": "object", "properties": {"value": _STRING}}},
    },
}
_PATCH = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": _STRING},
        "Operations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "op": {"anyOf": [{"enum": ["add", "remove", "replace", "Add", "Replace"]}, _STRING]},
                    "path": _STRING,
                    "value": {},
                },
            },
        },
    },
}
_SEARCH = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": _STRING},
        "filter": _STRING,
        "startIndex": {"type": "integer"},
        "count": {"type": "integer"},
        "attributes": {"type": "array", "items": _STRING},
        "sortBy": _STRING,
        "sortOrder": _STRING,
    },
}
_LIST_PARAMS = [
    {"name": name, "in": "query", "required": False, "schema": schema}
    for name, schema in (
        ("filter", _STRING),
        ("startIndex", {"type": "integer"}),
        ("count", {"type": "integer"}),
        ("attributes", _STRING),
        ("excludedAttributes", _STRING),
        ("sortBy", _STRING),
        ("sortOrder", _STRING),
    )
]
_ID = [{"name": "id", "in": "path", "required": True, "schema": _STRING}]


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/scim+json": {"schema": schema}}}


def _resource_paths(collection: str, schema: dict[str, Any]) -> dict[str, Any]:
    ok = {"default": {"description": "any"}}
    return {
        f"/{collection}": {
            "get": {"parameters": _LIST_PARAMS, "responses": ok},
            "post": {"requestBody": _body(schema), "responses": ok},
        },
        f"/{collection}/{{id}}": {
            "parameters": _ID,
            "get": {"parameters": _LIST_PARAMS[3:5], "responses": ok},
            "put": {"requestBody": _body(schema), "responses": ok},
            "patch": {"requestBody": _body(_PATCH), "responses": ok},
            "delete": {"responses": ok},
        },
        f"/{collection}/.search": {"post": {"requestBody": _body(_SEARCH), "responses": ok}},
    }


def scim_openapi() -> dict[str, Any]:
    """An OpenAPI 3.0 description of the SCIM API as RFC 7644 defines it."""
    ok = {"default": {"description": "any"}}
    paths: dict[str, Any] = {**_resource_paths("Users", _USER), **_resource_paths("Groups", _GROUP)}
    paths["/.search"] = {"post": {"requestBody": _body(_SEARCH), "responses": ok}}
    for discovery in ("/ServiceProviderConfig", "/Schemas", "/ResourceTypes"):
        paths[discovery] = {"get": {"responses": ok}}
    for item in ("/Schemas/{id}", "/ResourceTypes/{id}"):
        paths[item] = {"parameters": _ID, "get": {"responses": ok}}
    return {"openapi": "3.0.3", "info": {"title": "syncd SCIM", "version": "2.0"}, "paths": paths}


@pytest.fixture(scope="module")
def scim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{folder}/scim.db"
    config = settings_from_dict(
        {"database": {"url": url}, "scim": {"enabled": True, "tokens": [{"name": "okta", "token": TOKEN}]}}
    )
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(config, store=SyncStore(engine), engine=engine, metrics=Metrics())
    with serve_in_thread(app) as base:
        yield f"{base}/scim/v2"
    engine.dispose()


def _schema(mode: GenerationMode) -> Any:
    loaded = schemathesis.openapi.from_dict(scim_openapi())
    loaded.config.generation.update(modes=[mode], max_examples=FUZZ_EXAMPLES, deterministic=True)
    return loaded


positive = _schema(GenerationMode.POSITIVE)
negative = _schema(GenerationMode.NEGATIVE)
_LISTED = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _check(case: Any, scim_url: str) -> None:
    response = case.call(base_url=scim_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    where = (case.method, case.formatted_path, case.query, case.body)
    assert response.status_code < 500, (*where, response.text[:500])
    if response.status_code >= 400 and case.method.upper() in _LISTED:  # others: see test_trace_gets_a_scim_405
        body = response.json()
        assert body.get("schemas") == [ERROR] and body.get("status") == str(response.status_code), (*where, body)
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith("application/scim+json"), (*where, content_type)


@positive.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzzed_valid_scim_requests_never_answer_500_and_errors_are_scim(case: Any, scim_url: str) -> None:
    _check(case, scim_url)


@negative.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzzed_malformed_scim_requests_never_answer_500_and_errors_are_scim(case: Any, scim_url: str) -> None:
    _check(case, scim_url)


#: found by the negative fuzzing (500 'internal error' before c240066), kept as exact cases
CONFUSED = [
    ("POST", "/Users/.search", {"filter": {"a": 1}}),
    ("POST", "/Users/.search", {"filter": 5}),
    ("POST", "/Groups/.search", {"sortBy": ["userName"]}),
    ("POST", "/.search", {"attributes": True}),
    ("POST", "/Users", {"schemas": True, "userName": "x@example.com"}),
    ("PUT", "/Groups/0", {"schemas": True, "displayName": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), CONFUSED, ids=[f"{m} {p} {b}" for m, p, b in CONFUSED])
def test_a_value_of_the_wrong_json_type_is_a_400(scim_url: str, method: str, path: str, body: Any) -> None:
    import httpx

    answer = httpx.request(method, scim_url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 400 and answer.json()["schemas"] == [ERROR], answer.text


def test_an_unroutable_path_still_gets_a_scim_error(scim_url: str) -> None:
    import httpx

    answer = httpx.get(scim_url + "/Schemas/%0A0", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 404 and answer.json().get("schemas") == [ERROR], answer.text


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "OPTIONS", "CONNECT", "PROPFIND"])
def test_a_method_no_scim_route_takes_gets_a_scim_405(scim_url: str, method: str) -> None:
    import httpx

    answer = httpx.request(method, scim_url + "/Users", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 405 and answer.json().get("schemas") == [ERROR], answer.text
