"""Errors are SCIM Error bodies; auth by bearer token (clear or SHA-256); ETags and If-Match; sizes and types."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from .conftest import Scim
from .serve_app import make_app, scim_settings

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def assert_error(answer, status: int, scim_type: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/scim+json")
    body = answer.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    assert body.get("scimType") == scim_type


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Basic b2t0YTpva3Rh", "Bearer wrong", "bearer okta-token-1x", "okta-token-1"]
)
def test_requests_without_a_valid_token_are_401(scim_sqlite: Scim, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = scim_sqlite.client.get("/scim/v2/Users", headers=headers)
    assert_error(answer, 401)
    assert scim_sqlite.client.get("/scim/v2/ServiceProviderConfig", headers=headers).status_code == 401


def test_token_given_as_sha256_is_accepted_and_names_the_source(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"hashed-secret").hexdigest()
    settings = scim_settings(f"sqlite:///{tmp_path}/h.db", {"okta": "clear-secret"})
    raw = settings.model_dump()
    raw["scim"]["tokens"].append({"name": "entra", "token_sha256": digest})
    raw["scim"]["tokens"][0]["token"] = "clear-secret"
    from syncd.settings import settings_from_dict

    registry = CollectorRegistry()
    from syncd.metrics import Metrics

    metrics = Metrics(registry)
    app, engine = make_app(settings_from_dict(raw), metrics=metrics)
    with TestClient(app) as client:
        created = client.post(
            "/scim/v2/Users",
            json={"schemas": [USER], "userName": "h"},
            headers={"Authorization": "Bearer hashed-secret"},
        )
        assert created.status_code == 201
        assert (
            client.get("/scim/v2/Users", headers={"Authorization": "Bearer clear-secret"}).json()["totalResults"] == 0
        )
        assert client.get("/scim/v2/Users", headers={"Authorization": "Bearer nope"}).status_code == 401
    engine.dispose()
    assert registry.get_sample_value("syncd_scim_auth_failures_total", {"reason": "invalid"}) == 1
    sample = {"method": "POST", "resource": "Users", "status": "201"}
    assert registry.get_sample_value("syncd_scim_requests_total", sample) == 1


def test_not_found_and_method_not_allowed(scim_sqlite: Scim) -> None:
    assert_error(scim_sqlite.get("/Users/does-not-exist"), 404)
    assert_error(scim_sqlite.get("/Groups/does-not-exist"), 404)
    assert_error(scim_sqlite.delete("/Users/does-not-exist"), 404)
    assert_error(scim_sqlite.patch("/Groups/nope", {"op": "add", "path": "members", "value": []}), 404)
    assert_error(scim_sqlite.get("/NoSuchEndpoint"), 404)
    assert_error(scim_sqlite.get("/Schemas/urn:nope"), 404)
    assert_error(scim_sqlite.get("/ResourceTypes/Nope"), 404)
    assert_error(scim_sqlite.post("/ServiceProviderConfig", {}), 405)
    assert_error(scim_sqlite.delete("/Users"), 405)
    assert_error(scim_sqlite.post("/Users/abc", {}), 405)


def test_bodies_that_are_not_resources_are_400(scim_sqlite: Scim) -> None:
    raw = scim_sqlite.client.post("/scim/v2/Users", content=b"{not json", headers=scim_sqlite.headers)
    assert_error(raw, 400, "invalidSyntax")
    assert_error(scim_sqlite.post("/Users", ["a list"]), 400, "invalidValue")
    assert_error(scim_sqlite.post("/Users", {"schemas": [USER]}), 400, "invalidValue")
    assert_error(
        scim_sqlite.post("/Users", {"schemas": [USER], "userName": "x", "active": "perhaps"}), 400, "invalidValue"
    )
    assert_error(scim_sqlite.get("/Users?count=ten"), 400, "invalidValue")


def test_body_over_the_limit_is_413(scim_sqlite: Scim) -> None:
    big = {"schemas": [USER], "userName": "big", "displayName": "x" * 5000}
    assert_error(scim_sqlite.post("/Users", big), 413)
    streamed = scim_sqlite.client.post(
        "/scim/v2/Users", content=iter([b'{"userName": "', b"y" * 5000, b'"}']), headers=scim_sqlite.headers
    )
    assert_error(streamed, 413)


def test_plain_json_is_accepted_too(scim_sqlite: Scim) -> None:
    answer = scim_sqlite.post(
        "/Users", {"schemas": [USER], "userName": "plain"}, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 201
    assert answer.headers["content-type"].startswith("application/scim+json")


def test_if_match_guards_writes_with_412(scim_sqlite: Scim) -> None:
    created = scim_sqlite.post("/Users", {"schemas": [USER], "userName": "e"})
    uid, tag = created.json()["id"], created.headers["etag"]
    stale = scim_sqlite.patch(
        f"/Users/{uid}", {"op": "add", "path": "title", "value": "a"}, headers={"If-Match": 'W/"7"'}
    )
    assert_error(stale, 412)
    fresh = scim_sqlite.patch(f"/Users/{uid}", {"op": "add", "path": "title", "value": "a"}, headers={"If-Match": tag})
    assert fresh.status_code == 200 and fresh.headers["etag"] == 'W/"2"'
    assert_error(scim_sqlite.put(f"/Users/{uid}", {"schemas": [USER], "userName": "e"}, headers={"If-Match": tag}), 412)
    assert_error(scim_sqlite.delete(f"/Users/{uid}", headers={"If-Match": tag}), 412)
    cached = scim_sqlite.get(f"/Users/{uid}", headers={"If-None-Match": 'W/"2"'})
    assert cached.status_code == 304
    assert scim_sqlite.delete(f"/Users/{uid}", headers={"If-Match": "*"}).status_code == 204


def test_discovery_describes_what_is_supported(scim_sqlite: Scim) -> None:
    config = scim_sqlite.get("/ServiceProviderConfig").json()
    assert config["patch"] == {"supported": True} and config["bulk"]["supported"] is False
    assert config["filter"] == {"supported": True, "maxResults": 1000}
    assert config["etag"] == {"supported": True} and config["sort"] == {"supported": True}
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    schemas = {s["id"]: s for s in scim_sqlite.get("/Schemas").json()["Resources"]}
    assert set(schemas) == {
        USER,
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:ietf:params:scim:schemas:extension:syncd:2.0:Group",
    }
    assert "password" not in {a["name"] for a in schemas[USER]["attributes"]}
    types = scim_sqlite.get("/ResourceTypes").json()["Resources"]
    assert [t["endpoint"] for t in types] == ["/Users", "/Groups"]
    assert types[0]["schemaExtensions"][0]["schema"] == "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert types[1]["schemaExtensions"][0]["schema"] == "urn:ietf:params:scim:schemas:extension:syncd:2.0:Group"
    assert scim_sqlite.get("/ResourceTypes/User").json()["name"] == "User"
    assert scim_sqlite.get(f"/Schemas/{USER}").json()["id"] == USER


def test_search_endpoints(scim_sqlite: Scim) -> None:
    uid = scim_sqlite.post("/Users", {"schemas": [USER], "userName": "s1", "title": "t"}).json()["id"]
    scim_sqlite.post("/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "s1"})
    search = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'title eq "t"',
        "attributes": ["userName"],
    }
    found = scim_sqlite.post("/Users/.search", search).json()
    assert found["Resources"] == [{"schemas": [USER], "id": uid, "userName": "s1"}]
    both = scim_sqlite.post("/.search", {"filter": 'displayName eq "s1" or userName eq "s1"'}).json()
    assert both["totalResults"] == 2
    assert [r["meta"]["resourceType"] for r in both["Resources"]] == ["User", "Group"]
    paged = scim_sqlite.post("/.search", {"startIndex": 2, "count": 1}).json()
    assert paged["totalResults"] == 2 and paged["Resources"][0]["meta"]["resourceType"] == "Group"
    assert_error(scim_sqlite.post("/.search", {"filter": 'nosuch eq "x"'}), 400, "invalidFilter")


def test_renaming_onto_a_taken_user_name_is_409_on_put_and_patch(scim: Scim) -> None:
    scim.post("/Users", {"schemas": [USER], "userName": "taken"})
    uid = scim.post("/Users", {"schemas": [USER], "userName": "free"}).json()["id"]
    assert_error(scim.put(f"/Users/{uid}", {"schemas": [USER], "userName": "TAKEN"}), 409, "uniqueness")
    patched = scim.patch(f"/Users/{uid}", {"op": "replace", "path": "userName", "value": "Taken"})
    assert_error(patched, 409, "uniqueness")
    assert scim.get(f"/Users/{uid}").json()["userName"] == "free"
    assert scim.patch(f"/Users/{uid}", {"op": "replace", "path": "userName", "value": "FREE"}).status_code == 200


def test_a_filter_over_the_length_limit_is_invalid_filter(scim_sqlite: Scim) -> None:
    long_filter = " or ".join(f'userName eq "user{n}"' for n in range(300))
    assert_error(scim_sqlite.get("/Users", params={"filter": long_filter}), 400, "invalidFilter")


def test_an_unreachable_database_answers_503_with_a_scim_body() -> None:
    from fastapi import FastAPI

    from syncd.scim import build_scim_router
    from syncd.store import make_engine

    settings = scim_settings("postgresql+psycopg://postgres@127.0.0.1:9/nowhere", {"okta": "t0ken"})
    engine = make_engine(settings.database.url, connect_args={"connect_timeout": 2})
    app = FastAPI()
    app.include_router(build_scim_router(settings, engine), prefix="/scim/v2")
    with TestClient(app) as client:
        headers = {"Authorization": "Bearer t0ken"}
        for method, path in (("GET", "/Users"), ("GET", "/Users/x"), ("POST", "/Users"), ("DELETE", "/Groups/x")):
            body = {"schemas": [USER], "userName": "u"} if method == "POST" else None
            answer = client.request(method, f"/scim/v2{path}", json=body, headers=headers)
            assert_error(answer, 503)
            assert answer.headers["retry-after"] == "5"
    engine.dispose()


@pytest.mark.parametrize(
    ("method", "path", "body", "scim_type"),
    [
        ("POST", "/Users/.search", {"filter": {"a": 1}}, "invalidFilter"),
        ("POST", "/Users/.search", {"filter": 5}, "invalidFilter"),
        ("POST", "/Groups/.search", {"sortBy": ["userName"]}, "invalidValue"),
        ("POST", "/Groups/.search", {"sortOrder": 1}, "invalidValue"),
        ("POST", "/.search", {"attributes": True}, "invalidValue"),
        ("POST", "/.search", {"count": True}, "invalidValue"),
        ("POST", "/Users", {"schemas": True, "userName": "x@example.com"}, "invalidValue"),
        ("PUT", "/Groups/0", {"schemas": True, "displayName": "x"}, "invalidValue"),
    ],
)
def test_values_of_the_wrong_json_type_are_400(
    scim_sqlite: Scim, method: str, path: str, body: object, scim_type: str
) -> None:
    assert_error(scim_sqlite.request(method, path, body), 400, scim_type)


def test_every_path_under_the_router_gets_a_scim_answer(scim_sqlite: Scim) -> None:
    assert_error(scim_sqlite.get("/Schemas/%0A0"), 404)
    assert_error(scim_sqlite.get("/No/Such%0AThing"), 404)


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "PROPFIND", "OPTIONS", "HEAD"])
def test_a_method_the_router_does_not_route_is_a_scim_405_from_the_router_itself(
    scim_sqlite: Scim, method: str
) -> None:
    """The router alone (no door in front: tests/scim/serve_app.py) renders it, before authentication, with Allow."""
    for path in ("/Users", "/Users/abc", "/ServiceProviderConfig", "/No/Such/Thing"):
        answer = scim_sqlite.client.request(method, f"/scim/v2{path}")
        assert answer.status_code == 405, (method, path, answer.text)
        assert answer.headers["content-type"].startswith("application/scim+json")
        assert "GET" in answer.headers["allow"] and method not in answer.headers["allow"]
        if method != "HEAD":
            assert answer.json() == {
                "schemas": [ERROR],
                "status": "405",
                "detail": f"{method} is not allowed on SCIM endpoints",
            }


@pytest.mark.parametrize("enabled", [True, False])
def test_every_answer_under_scim_is_a_scim_one_in_the_whole_app(tmp_path: Path, enabled: bool) -> None:
    """syncd's app: the door's refusals, Starlette's own 404 (a path outside the router, SCIM off) and the router's
    errors all come from syncd.scim.errors; elsewhere errors stay plain JSON."""
    from syncd.app import create_app
    from syncd.metrics import Metrics
    from syncd.settings import settings_from_dict
    from syncd.store import make_engine, upgrade
    from syncd.store.repository import SyncStore

    url = f"sqlite:///{tmp_path}/app.db"
    scim = {"enabled": enabled, "tokens": [{"name": "okta", "token": "okta-token-0123456789abcdef0123456789"}]}
    settings = settings_from_dict(
        {"database": {"url": url}, "scim": scim, "server": {"rate_limit_burst": 40, "rate_limit_per_s": 0.5}}
    )
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(settings, store=SyncStore(engine), engine=engine, metrics=Metrics())
    with TestClient(app) as client:
        assert_error(client.get("/scim"), 404)
        assert_error(client.get("/scim/v1/Users"), 404)
        assert_error(client.get("/scim/v2/Users?filter=%00"), 400)
        if enabled:
            assert_error(client.request("TRACE", "/scim/v2/Users"), 405)
            assert_error(client.get("/scim/v2/Users"), 401)
        else:
            assert_error(client.get("/scim/v2/Users"), 404)
        assert client.get("/nowhere").json() == {"detail": "Not Found"}
        answers = [client.get("/scim/v2/Users") for _ in range(60)]
        assert_error(answers[-1], 429)
    engine.dispose()
