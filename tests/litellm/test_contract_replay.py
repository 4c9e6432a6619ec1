"""Replays every recorded LiteLLM 1.108.7 admin call, in order, against the fake and compares the answers.

The recordings (tests/litellm/recordings/exercise*.json, copied from the project's litellm-contract) were made
one after the other against one proxy, so they are replayed in one fake, in file order. Each answer is compared
whole: status and the complete JSON body, after two normalisations only:
- generated values (keys `sk-...`, their hashed tokens, uuids) are mapped: the first time a recorded one shows
  up, the fake's value at the same place becomes its stand-in, and every later mention must use that stand-in;
- timestamps are masked (`<ts>`), so only their presence (null or not) is compared.
Recorded calls whose headers were not recorded get the key the recording implies (see `_key_for`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _replay import CALLS, FILES, MASTER_KEY, RECORDINGS, SHARED, Replay, mask_times

from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    """One fake for the whole replay: the recordings build on each other."""
    with serve_in_thread(create_fake_litellm(MASTER_KEY)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield Replay(client)


def test_every_recorded_call_is_replayed_or_listed() -> None:
    """The replay covers the three files, every call of them compared whole."""
    assert len(CALLS) == 61 + 30 + 16
    assert len({name for name, _ in CALLS}) == len(CALLS)  # each call its own test id


@pytest.mark.skipif(not SHARED.is_dir(), reason="the project's shared litellm-contract is not on this machine")
@pytest.mark.parametrize("name", FILES)
def test_recordings_are_the_shared_ones(name: str) -> None:
    """The copies replayed here are byte for byte the project's recordings."""
    assert (RECORDINGS / name).read_bytes() == (SHARED / name).read_bytes()


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[name for name, _ in CALLS])
def test_recorded_call(replay: Replay, name: str, call: dict[str, Any]) -> None:
    """The fake answers the recorded call with the recorded status and body (generated values mapped)."""
    response = replay.send(call)
    actual = response.json()
    replay.learn(call["response"], actual)
    assert response.status_code == call["status"], actual
    assert mask_times(actual) == mask_times(replay.substitute(call["response"]))
