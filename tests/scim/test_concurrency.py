"""Concurrent PATCHes on one group on PostgreSQL lose no member: the group's row is locked for each write.

The app runs under uvicorn (real concurrency: one thread-pool worker per request) and eight client threads PATCH
the same group at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from .conftest import TOKENS, serving

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def pg_server(postgres: Any) -> Iterator[httpx.Client]:
    with serving(postgres.create("syncd_scim")) as url:
        headers = {"Authorization": f"Bearer {TOKENS['okta']}"}
        limits = httpx.Limits(max_connections=16)
        with httpx.Client(base_url=url, headers=headers, limits=limits, timeout=30) as client:
            yield client


def _patch(client: httpx.Client, gid: str, *operations: dict[str, Any]) -> int:
    body = {"schemas": [PATCH], "Operations": list(operations)}
    return client.patch(f"/Groups/{gid}", json=body).status_code


@pytest.mark.postgres
def test_concurrent_member_adds_and_removes_on_one_group_lose_nothing(pg_server: httpx.Client) -> None:
    client = pg_server
    users = [client.post("/Users", json={"schemas": [USER], "userName": f"c{n}"}).json()["id"] for n in range(48)]
    keep, drop = users[:36], users[36:]
    gid = client.post(
        "/Groups", json={"schemas": [GROUP], "displayName": "race", "members": [{"value": u} for u in drop]}
    )
    gid = gid.json()["id"]
    jobs = [("add", uid) for uid in keep] + [("remove", uid) for uid in drop]
    jobs += [("add", keep[0])] * 8  # the same member added by many requests at once: once in, no error
    jobs.sort(key=lambda job: hash(job[1]))

    def run(job: tuple[str, str]) -> int:
        op, uid = job
        if op == "add":
            return _patch(client, gid, {"op": "add", "path": "members", "value": [{"value": uid}]})
        return _patch(client, gid, {"op": "remove", "path": f'members[value eq "{uid}"]'})

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(run, jobs))
    assert set(statuses) == {200}
    group = client.get(f"/Groups/{gid}").json()
    assert sorted(m["value"] for m in group["members"]) == sorted(keep)
    assert group["meta"]["version"] == f'W/"{1 + len(users)}"'  # one version per effective change


@pytest.mark.postgres
def test_concurrent_path_less_replaces_and_adds_serialise(pg_server: httpx.Client) -> None:
    client = pg_server
    users = [client.post("/Users", json={"schemas": [USER], "userName": f"r{n}"}).json()["id"] for n in range(16)]
    gid = client.post("/Groups", json={"schemas": [GROUP], "displayName": "swap"}).json()["id"]

    def run(uid: str) -> int:
        return _patch(client, gid, {"op": "add", "value": {"members": [{"value": uid}]}})

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(run, users)) == {200}
    members = {m["value"] for m in client.get(f"/Groups/{gid}").json()["members"]}
    assert members == set(users)
