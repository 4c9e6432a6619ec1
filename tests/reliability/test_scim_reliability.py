"""SCIM and the admin routes of `syncd serve`'s app: every route enumerated from the app refuses a missing, wrong or
other tenant's token; one tenant cannot see or touch another's resources; filters carrying SQL or LIKE wildcards stay
literal; PostgreSQL going away answers 503 with a SCIM error (the IdP retries) and readiness fails, and work resumes
when it returns; 50 concurrent SCIM clients on PostgreSQL lose no membership and see no 500.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from _reliability import figures, wait_for
from _slapd import free_port
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from starlette.routing import Route

from syncd.app import create_app
from syncd.metrics import Metrics
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore

TOKENS = {"okta": "okta-token-Rel-1f2e", "entra": "entra-token-Rel-9a8b"}
ADMIN = "admin-token-Rel-44cd"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
#: routes anyone may call, on purpose; a new route is refused without a token unless it is added here
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/"), ("POST", "/login")}


def _settings(database_url: str) -> Any:
    tokens = [{"name": name, "token": token} for name, token in TOKENS.items()]
    return settings_from_dict(
        {
            "database": {"url": database_url},
            "scim": {"enabled": True, "tokens": tokens},
            "server": {"admin_token": ADMIN},
        }
    )


@dataclass
class App:
    client: TestClient
    engine: Any

    def scim(self, method: str, path: str, token: str | None = TOKENS["okta"], body: Any = None) -> httpx.Response:
        headers = {"Content-Type": "application/scim+json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, f"/scim/v2{path}", json=body, headers=headers)


def _open(database_url: str) -> Iterator[App]:
    settings = _settings(database_url)
    engine = make_engine(database_url)
    upgrade(engine)
    app = create_app(settings, store=SyncStore(engine), engine=engine, metrics=Metrics())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield App(client, engine)
    engine.dispose()


@pytest.fixture
def app(tmp_path: Any) -> Iterator[App]:
    yield from _open(f"sqlite:///{tmp_path}/scim.db")


def _user(app: App, name: str, token: str = TOKENS["okta"]) -> str:
    done = app.scim("POST", "/Users", token, {"schemas": [USER], "userName": name, "emails": [{"value": name}]})
    assert done.status_code == 201, done.text
    return str(done.json()["id"])


def _group(app: App, name: str, members: list[str], token: str = TOKENS["okta"]) -> str:
    body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
    done = app.scim("POST", "/Groups", token, body)
    assert done.status_code == 201, done.text
    return str(done.json()["id"])


# -- auth on every route ------------------------------------------------------------------------------------------
def _routes(routes: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route, included routers walked (FastAPI keeps them as lazily included branches)."""
    found = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found += _routes(included.routes, prefix + route.include_context.prefix)
        elif isinstance(route, APIRoute | Route):
            for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((method, prefix + route.path))
        else:
            raise AssertionError(f"a route of an unknown kind, not checked: {route!r}")
    return found


def _concrete(path: str, ids: dict[str, str]) -> str:
    for name, value in (("{id:path}", ids["schema"]), ("{id}", ids["id"]), ("{rest:path}", "Anything/else")):
        path = path.replace(name, value)
    return path


def _send(app: App, method: str, path: str, authorization: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/scim+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = None if method in ("GET", "DELETE") else {"schemas": [USER], "userName": "probe"}
    return app.client.request(method, path, json=body, headers=headers)


def test_every_route_refuses_a_missing_wrong_or_foreign_token(app: App) -> None:
    uid = _user(app, "owner@example.com")
    before = app.scim("GET", f"/Users/{uid}").json()
    routes = _routes(app.client.app.routes)
    scim_routes = [(m, p) for m, p in routes if p.startswith("/scim/v2")]
    admin_routes = [(m, p) for m, p in routes if not p.startswith("/scim/v2") and (m, p) not in PUBLIC]
    assert len(scim_routes) >= 40 and ("GET", "/status") in admin_routes
    refused: dict[tuple[str, str], list[httpx.Response]] = {}
    for method, template in routes:
        if (method, template) in PUBLIC:
            continue
        path = _concrete(template, {"id": uid, "schema": USER})
        scim = template.startswith("/scim/v2")
        valid = f"Bearer {TOKENS['okta'] if scim else ADMIN}"
        foreign = f"Bearer {ADMIN if scim else TOKENS['okta']}"
        refused[(method, template)] = [
            _send(app, method, path, authorization)
            for authorization in (None, "Bearer wrong-token", foreign, "Basic b2t0YTpva3Rh", valid.lower(), "Bearer ")
        ]
    assert app.scim("GET", f"/Users/{uid}").json() == before  # no refused request changed anything
    for (method, template), answers in refused.items():
        scim = template.startswith("/scim/v2")
        valid = f"Bearer {TOKENS['okta'] if scim else ADMIN}"
        served = _send(app, method, _concrete(template, {"id": uid, "schema": USER}), valid).status_code
        for answer in answers:
            assert answer.status_code >= 400, (method, template, answer.status_code)
            if served not in (404, 405):  # the route does something for a valid token: a refusal is a 401
                assert answer.status_code == 401, (method, template, answer.status_code, answer.text)
                if scim:
                    assert answer.json()["schemas"] == [ERROR] and answer.json()["status"] == "401"
            assert TOKENS["okta"] not in answer.text and ADMIN not in answer.text
    checked = sum(map(len, refused.values()))
    figures("scim-auth", routes=len(routes), public=len(PUBLIC), refusals_checked=checked)


def test_one_tenant_can_neither_see_nor_touch_anothers_resources(app: App) -> None:
    uid = _user(app, "okta-person@example.com")
    gid = _group(app, "okta-group", [uid])
    mine = _user(app, "entra-person@example.com", TOKENS["entra"])
    entra = TOKENS["entra"]
    assert app.scim("GET", f"/Users/{uid}", entra).status_code == 404
    assert app.scim("GET", f"/Groups/{gid}", entra).status_code == 404
    assert app.scim("GET", '/Users?filter=userName eq "okta-person@example.com"', entra).json()["totalResults"] == 0
    assert app.scim("GET", "/Groups", entra).json()["totalResults"] == 0
    replace = {"schemas": [USER], "userName": "stolen@example.com", "active": False}
    assert app.scim("PUT", f"/Users/{uid}", entra, replace).status_code == 404
    deactivate = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
    assert app.scim("PATCH", f"/Users/{uid}", entra, deactivate).status_code == 404
    join = {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": mine}]}]}
    assert app.scim("PATCH", f"/Groups/{gid}", entra, join).status_code == 404
    assert app.scim("DELETE", f"/Users/{uid}", entra).status_code == 404
    assert app.scim("DELETE", f"/Groups/{gid}", entra).status_code == 404
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": 'userName sw "okta"'}
    assert app.scim("POST", "/.search", entra, search).json()["totalResults"] == 0
    user, group = app.scim("GET", f"/Users/{uid}").json(), app.scim("GET", f"/Groups/{gid}").json()
    assert user.get("active", True) is True and user["userName"] == "okta-person@example.com"
    assert [m["value"] for m in group["members"]] == [uid]


# -- SQL injection and wildcards through filters ------------------------------------------------------------------
INJECTIONS = [
    "userName eq \"x' OR '1'='1\"",
    'userName eq "x\\" or 1=1 --"',
    'userName eq "\'; DROP TABLE identities; --"',
    'userName co "%"',
    'userName sw "_"',
    'userName ew "%"',
    'userName co "\\\\"',
    'displayName eq "\') UNION SELECT * FROM managed_users --"',
    'emails[value co "%"].value pr',
    'userName eq "a" or userName pr',
    "userName eq 1 or 1 eq 1",
    'meta.lastModified gt "1970-01-01T00:00:00Z\' OR 1=1"',
]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_filters_are_bound_parameters_and_wildcards_stay_literal(
    engine: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/scim.db" if engine == "sqlite" else request.getfixturevalue("postgres").create()
    for app in _open(url):
        for name in ("alice@example.com", "bob@example.com", "100%@example.com"):
            _user(app, name)
        counts = {}
        for flt in INJECTIONS:
            done = app.scim("GET", "/Users?filter=" + httpx.QueryParams({"f": flt})["f"])
            assert done.status_code in (200, 400), (flt, done.status_code, done.text)
            body = done.json()
            if done.status_code == 400:
                assert body["schemas"] == [ERROR] and body["scimType"] in ("invalidFilter", "invalidValue"), body
                counts[flt] = "400"
                continue
            counts[flt] = body["totalResults"]
        assert counts['userName co "%"'] in (1, "400"), "a % in a filter value matched more than a literal %"
        assert counts['userName sw "_"'] in (0, "400") and counts['userName ew "%"'] in (0, "400")
        assert all(counts[f] in (0, "400") for f in INJECTIONS[:3] + INJECTIONS[7:8])
        assert app.scim("GET", "/Users").json()["totalResults"] == 3  # nothing dropped or changed
        figures("scim-sql", engine=engine, filters=len(INJECTIONS), answers=counts)


# -- PostgreSQL unreachable ---------------------------------------------------------------------------------------
@pytest.fixture
def pg_app(postgres: Any) -> Iterator[tuple[App, str]]:
    url = postgres.create("syncd_rel_outage")
    name = url.rsplit("/", 1)[1]
    for app in _open(url):
        yield app, name
    admin = create_engine(postgres.admin.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    admin.dispose()


def _cut(postgres: Any, name: str, *, allow: bool) -> None:
    """Refuse (or allow again) new connections to one throwaway database and end the open ones."""
    with postgres.admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}'))
        if not allow:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})


def test_postgresql_unreachable_answers_503_and_work_resumes(pg_app: tuple[App, str], postgres: Any) -> None:
    app, name = pg_app
    uid = _user(app, "before@example.com")
    _cut(postgres, name, allow=False)
    try:
        assert app.client.get("/readyz").status_code == 503
        answers = [
            app.scim("GET", f"/Users/{uid}"),
            app.scim("POST", "/Users", body={"schemas": [USER], "userName": "during@example.com"}),
            app.scim("GET", "/Users"),
        ]
        assert app.client.get("/healthz").status_code == 200  # alive, only not ready
    finally:
        _cut(postgres, name, allow=True)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["schemas"] == [ERROR] and answer.json()["status"] == "503"
    assert app.client.get("/readyz").status_code == 200
    assert app.scim("GET", f"/Users/{uid}").status_code == 200


def test_postgresql_unreachable_fails_readiness_and_nothing_crashes(pg_app: tuple[App, str], postgres: Any) -> None:
    """What holds today: no 2xx, a SCIM error body, readiness 503, liveness 200, and recovery."""
    app, name = pg_app
    uid = _user(app, "before@example.com")
    _cut(postgres, name, allow=False)
    try:
        ready = app.client.get("/readyz")
        answers = [
            app.scim("GET", f"/Users/{uid}"),
            app.scim("POST", "/Users", body={"schemas": [USER], "userName": "during@example.com"}),
        ]
        alive = app.client.get("/healthz").status_code
    finally:
        _cut(postgres, name, allow=True)
    assert ready.status_code == 503 and "database unreachable" in ready.json()["reason"] and alive == 200
    for answer in answers:
        assert answer.status_code >= 500 and answer.json()["schemas"] == [ERROR], answer.text
    assert app.client.get("/readyz").status_code == 200
    assert app.scim("GET", f"/Users/{uid}").status_code == 200
    assert app.scim("POST", "/Users", body={"schemas": [USER], "userName": "after@example.com"}).status_code == 201


# -- 50 concurrent clients on PostgreSQL ----------------------------------------------------------------------------
@dataclass
class Ledger:
    """What the server accepted, per client: users alive and group memberships (clients touch only their users)."""

    users: dict[str, str] = field(default_factory=dict)  # id -> userName, alive
    member_of: dict[str, set[str]] = field(default_factory=dict)  # group id -> user ids
    statuses: dict[int, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)  # "op status scimType" of the 4xx answers
    requests: int = 0

    def count(self, answer: httpx.Response, op: str) -> int:
        self.requests += 1
        status = answer.status_code
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 400 <= status < 500:
            detail = str(answer.json().get("detail"))
            whose = "own" if self.users and any(uid in detail for uid in self.users) else "other"
            key = f"{op} {status} {answer.json().get('scimType')} ({whose} user)"
            self.refusals[key] = self.refusals.get(key, 0) + 1
        return status


def _client_loop(base: str, groups: list[str], seed: int, until: float, ledger: Ledger) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {TOKENS['okta']}", "Content-Type": "application/scim+json"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        while time.monotonic() < until:
            roll = rng.random()
            mine = list(ledger.users)
            if roll < 0.25 or not mine:
                name = f"c{seed}-{uuid.uuid4().hex[:8]}@example.com"
                done = http.post("/Users", json={"schemas": [USER], "userName": name})
                if ledger.count(done, "create user") == 201:
                    ledger.users[done.json()["id"]] = name
            elif roll < 0.45:
                uid = rng.choice(mine)
                op = {"op": "replace", "value": {"displayName": f"n{rng.random():.6f}", "active": rng.random() > 0.2}}
                ledger.count(http.patch(f"/Users/{uid}", json={"schemas": [PATCH], "Operations": [op]}), "patch user")
            elif roll < 0.7:
                uid, gid = rng.choice(mine), rng.choice(groups)
                op = {"op": "add", "path": "members", "value": [{"value": uid}]}
                done = http.patch(f"/Groups/{gid}", json={"schemas": [PATCH], "Operations": [op]})
                if ledger.count(done, "add member") in (200, 204):
                    ledger.member_of.setdefault(gid, set()).add(uid)
            elif roll < 0.9:
                uid, gid = rng.choice(mine), rng.choice(groups)
                op = {"op": "remove", "path": f'members[value eq "{uid}"]'}
                done = http.patch(f"/Groups/{gid}", json={"schemas": [PATCH], "Operations": [op]})
                if ledger.count(done, "remove member") in (200, 204):
                    ledger.member_of.setdefault(gid, set()).discard(uid)
            else:
                uid = rng.choice(mine)
                done = http.delete(f"/Users/{uid}")
                if ledger.count(done, "delete user") == 204:
                    del ledger.users[uid]
                    for members in ledger.member_of.values():
                        members.discard(uid)


@contextmanager
def _served(postgres: Any) -> Iterator[tuple[str, httpx.Client]]:
    """The SCIM router served by uvicorn in its own process over a fresh PostgreSQL database."""
    url = postgres.create("syncd_rel_load")
    port = free_port()
    script = Path(__file__).resolve().parents[1] / "scim" / "serve_app.py"
    server = subprocess.Popen(
        [sys.executable, str(script), url, str(port), TOKENS["okta"]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}/scim/v2"
    try:
        headers = {"Authorization": f"Bearer {TOKENS['okta']}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as admin:
            wait_for(lambda: server.poll() is not None or _answers(admin), 30, "the SCIM server", every_s=0.05)
            assert server.poll() is None, server.communicate()[1][-2000:]
            yield base, admin
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/ServiceProviderConfig").status_code == 200
    except httpx.TransportError:
        return False


def _all_user_ids(admin: httpx.Client) -> set[str]:
    """Every user id, paged (a page holds at most scim.max_results)."""
    found: set[str] = set()
    start = 1
    while True:
        page = admin.get("/Users", params={"startIndex": start, "count": 500, "attributes": "id"}).json()
        found |= {r["id"] for r in page.get("Resources", [])}
        start += len(page.get("Resources", []))
        if not page.get("Resources") or start > page["totalResults"]:
            return found


def _concurrent_clients(postgres: Any, clients: int, seconds: float, name: str) -> None:
    with _served(postgres) as (base, admin):
        groups = [
            admin.post("/Groups", json={"schemas": [GROUP], "displayName": f"g{i}"}).json()["id"] for i in range(5)
        ]
        ledgers = [Ledger() for _ in range(clients)]
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_client_loop, args=(base, groups, seed, until, ledgers[seed]), daemon=True)
            for seed in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 120)
        assert not any(t.is_alive() for t in threads)
        statuses: dict[int, int] = {}
        refusals: dict[str, int] = {}
        for ledger in ledgers:
            for status, n in ledger.statuses.items():
                statuses[status] = statuses.get(status, 0) + n
            for reason, n in ledger.refusals.items():
                refusals[reason] = refusals.get(reason, 0) + n
        assert not any(s >= 500 for s in statuses), statuses
        expected_members = {g: set().union(*(lg.member_of.get(g, set()) for lg in ledgers)) for g in groups}
        for gid in groups:
            found = {m["value"] for m in admin.get(f"/Groups/{gid}").json().get("members", [])}
            assert found == expected_members[gid], f"group {gid}: lost {expected_members[gid] - found}"
        alive = {uid for lg in ledgers for uid in lg.users}
        assert _all_user_ids(admin) == alive
        total = sum(lg.requests for lg in ledgers)
        figures(
            name,
            clients=clients,
            seconds=seconds,
            requests=total,
            per_second=round(total / seconds, 1),
            statuses=statuses,
            refusals=refusals,
            members=sum(map(len, expected_members.values())),
            users=len(alive),
        )


@pytest.mark.postgres
def test_50_concurrent_scim_clients_lose_no_membership(postgres: Any) -> None:
    _concurrent_clients(postgres, 50, 20.0, "scim-concurrency")


@pytest.mark.slow
@pytest.mark.postgres
def test_50_concurrent_scim_clients_for_a_minute(postgres: Any) -> None:
    _concurrent_clients(postgres, 50, 60.0, "scim-concurrency-slow")


def _race(base: str, gid: str, role: str, until: float, refused: list[str]) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['okta']}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        mine = http.post("/Users", json={"schemas": [USER], "userName": f"{uuid.uuid4().hex}@x.org"}).json()["id"]
        while time.monotonic() < until:
            if role == "churn":  # a person joins the group, then is deleted
                uid = http.post("/Users", json={"schemas": [USER], "userName": f"{uuid.uuid4().hex}@x.org"}).json()[
                    "id"
                ]
                op = {"op": "add", "path": "members", "value": [{"value": uid}]}
                http.patch(f"/Groups/{gid}", json={"schemas": [PATCH], "Operations": [op]})
                http.delete(f"/Users/{uid}")
                continue
            for op in (
                {"op": "add", "path": "members", "value": [{"value": mine}]},
                {"op": "remove", "path": f'members[value eq "{mine}"]'},
            ):
                answer = http.patch(f"/Groups/{gid}", json={"schemas": [PATCH], "Operations": [op]})
                if answer.status_code >= 400:
                    refused.append(f"{answer.status_code} {answer.json().get('detail')}")


@pytest.mark.postgres
def test_a_member_deleted_concurrently_does_not_refuse_anothers_membership_change(postgres: Any) -> None:
    with _served(postgres) as (base, admin):
        gid = admin.post("/Groups", json={"schemas": [GROUP], "displayName": "race"}).json()["id"]
        refused: list[str] = []
        until = time.monotonic() + 6
        threads = [
            threading.Thread(target=_race, args=(base, gid, role, until, refused), daemon=True)
            for role in ["churn"] * 6 + ["member"] * 6
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        figures("scim-race", refused_valid_patches=len(refused), sample=refused[:2])
        assert refused == []


# -- length limits --------------------------------------------------------------------------------------------------
def test_a_filter_over_the_length_limit_is_a_scim_400(app: App) -> None:
    _user(app, "someone@example.com")
    long_filter = " or ".join(f'userName eq "u{i}@example.com"' for i in range(200))  # ~5,600 characters > 4,096
    answer = app.scim("GET", "/Users?filter=" + httpx.QueryParams({"f": long_filter})["f"])
    assert answer.status_code == 400 and answer.json()["schemas"] == [ERROR], answer.text[:300]
    searched = app.scim("POST", "/Users/.search", body={"filter": long_filter})
    assert searched.status_code == 400 and searched.json()["schemas"] == [ERROR], searched.text[:300]


def test_a_scim_body_over_the_limit_is_a_scim_413(app: App) -> None:
    big = {"schemas": [USER], "userName": "big@example.com", "displayName": "x" * 1_100_000}
    answer = app.scim("POST", "/Users", body=big)
    assert answer.status_code == 413 and answer.json().get("schemas") == [ERROR], answer.text[:300]
