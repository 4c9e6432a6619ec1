"""Fixtures of the LiteLLM suite: a fake LiteLLM served over real HTTP on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette

from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

MASTER_KEY = "sk-test-master-7c1d"


@pytest.fixture(scope="session")
def master_key() -> str:
    """The master key the fake of this suite accepts."""
    return MASTER_KEY


@pytest.fixture(scope="module")
def fake_app() -> Starlette:
    """One fake LiteLLM per test module (tests reset what they change through `fake`)."""
    return create_fake_litellm(MASTER_KEY)


@pytest.fixture(scope="module")
def fake_url(fake_app: Starlette) -> Iterator[str]:
    """The base URL of the fake, served by uvicorn in a background thread."""
    with serve_in_thread(fake_app) as url:
        yield url


@pytest.fixture
def fake(fake_app: Starlette) -> Iterator[FakeLiteLLM]:
    """The fake's state, with faults cleared and the call log emptied before and after each test."""
    state: FakeLiteLLM = fake_app.state.fake
    state.faults = type(state.faults)()
    state.reset_calls()
    yield state
    state.faults = type(state.faults)()
    state.reset_calls()
