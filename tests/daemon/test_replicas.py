"""Several `syncd serve` on one PostgreSQL: one leader runs the scheduled pulls and applies; SIGKILL hands over."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from _daemon import base_config, ldap_source, scim_engineer, wait_for, with_directory

pytestmark = pytest.mark.postgres


def _leader(replicas: list[Any]) -> Any:
    leaders = [r for r in replicas if r.process.poll() is None and r.metric("syncd_leader") == 1]
    return leaders[0] if len(leaders) == 1 else None


def _pulls(replica: Any) -> float:
    return replica.metric("syncd_pulls_total", source="corp", mode="full", outcome="success")


def test_one_leader_pulls_and_a_survivor_takes_over(
    postgres: Any, fake: Any, launch: Any, slapd: Any, directory: Any
) -> None:
    directory.add_group("engineers", [directory.add_user("dave")])
    config = base_config(postgres.create(), fake.url)
    with_directory(config, ldap_source(slapd, directory.base, full="2s"))
    first = launch(config, args=("--migrate",))
    first.wait_healthy()
    config["server"]["port"] += 1
    second = launch(config)
    second.wait_healthy()
    replicas = [first, second]
    leader = wait_for(lambda: _leader(replicas), 10, "exactly one leader")
    follower = second if leader is first else first
    wait_for(lambda: "dave" in fake.users(), 15, "the leader's scheduled pull reaching LiteLLM")

    # the follower schedules the same jobs but runs none of them
    wait_for(lambda: _pulls(leader) >= 3, 15, "three scheduled full pulls on the leader")
    assert _pulls(follower) == 0
    assert follower.metric("syncd_runs_total", source="all", outcome="success") == 0

    # a SCIM write recorded by the follower reaches LiteLLM through the leader within seconds
    started = time.monotonic()
    erin = scim_engineer(follower, "erin")
    wait_for(lambda: erin in fake.users(), 10, "the follower's SCIM write in LiteLLM")
    assert time.monotonic() - started < 5
    assert leader.metric("syncd_scim_to_litellm_seconds_count") >= 1

    # the leader dies without a word; the follower takes over within 30 s and pulls on schedule
    killed_at = time.monotonic()
    leader.signal(signal.SIGKILL)
    leader.wait(10)
    wait_for(lambda: follower.metric("syncd_leader") == 1, 30, "the survivor to take the lead")
    assert time.monotonic() - killed_at < 30
    wait_for(lambda: _pulls(follower) >= 1, 10, "a scheduled pull on the new leader")
    directory.add_member(f"cn=engineers,ou=groups,{directory.base}", directory.add_user("frank"))
    wait_for(lambda: "frank" in fake.users(), 15, "a directory change through the new leader")
