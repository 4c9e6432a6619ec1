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

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

RECORDINGS = Path(__file__).parent / "recordings"
SHARED = Path("/work/shared/litellm-contract")
FILES = ("exercise.json", "exercise2.json", "exercise3.json")
MASTER_KEY = "sk-replay-master"
_GENERATED = re.compile(
    r"sk-[A-Za-z0-9_-]{22}|sk-\.\.\.[A-Za-z0-9_-]{4}|[0-9a-f]{64}"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)|\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC"
)
# Calls made with a key other than the master key; the recordings name the key by what the call shows.
_CALL_KEYS = {
    "blocked_key_calls_model": "sk-Ehgaa6bEO3_XPGBI23e9nA",  # alice's key, blocked just before
    "non_admin_key_user_new": "sk-Qc0LZiL2NzDVsAGnzH3qtw",  # bob's auto-created key: role internal_user_viewer
    "non_admin_key_user_list": "sk-Qc0LZiL2NzDVsAGnzH3qtw",
    "chat_rpm1_0": "sk-9a6G8Fyi4pwyVnSVgb9D1w",  # the key made with rpm_limit 1
    "chat_rpm1_1": "sk-9a6G8Fyi4pwyVnSVgb9D1w",
    "chat_rpm1_2": "sk-9a6G8Fyi4pwyVnSVgb9D1w",
    "baseline_chat": "sk-7GqMVWdrdXQR399GlZKlNQ",  # deact-meta's auto-created key
    "chat_after_scim_active_false": "sk-7GqMVWdrdXQR399GlZKlNQ",
    "chat_after_scim_active_true": "sk-7GqMVWdrdXQR399GlZKlNQ",
    "chat_after_budget0": "sk-TYjzSv_MT_zgqR1fZ8UOjw",  # deact-budget's key
    "chat_after_no_default_models": "sk-dARkdnbnBkYWAzcGDvkw_w",  # deact-models' key
    "chat_after_models_empty": "sk-dARkdnbnBkYWAzcGDvkw_w",
}
# Recorded calls the fake does not reproduce exactly, with why. Everything else must match whole.
NOT_REPRODUCED: dict[str, str] = {}


def _recorded_calls() -> list[tuple[str, dict[str, Any]]]:
    calls = []
    for name in FILES:
        for call in json.loads((RECORDINGS / name).read_text()):
            calls.append((f"{name.removesuffix('.json')}:{call['name']}", call))
    return calls


CALLS = _recorded_calls()


class Replay:
    """The replay's running state: the fake, its URL, and recorded generated values mapped to the fake's."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.stand_ins: dict[str, str] = {}

    def substitute(self, value: Any) -> Any:
        """A recorded value with every mapped generated value replaced by its stand-in."""
        if isinstance(value, str):
            return _GENERATED.sub(lambda m: self.stand_ins.get(m.group(0), m.group(0)), value)
        if isinstance(value, list):
            return [self.substitute(item) for item in value]
        if isinstance(value, dict):
            return {key: self.substitute(item) for key, item in value.items()}
        return value

    def learn(self, recorded: Any, actual: Any) -> None:
        """Map the generated values of a recorded answer to the fake's values at the same places."""
        if isinstance(recorded, str) and isinstance(actual, str):
            ours, theirs = _GENERATED.findall(recorded), _GENERATED.findall(actual)
            for mine, fake in zip(ours, theirs, strict=False):
                self.stand_ins.setdefault(mine, fake)
        elif isinstance(recorded, list) and isinstance(actual, list):
            for mine, fake in zip(recorded, actual, strict=False):
                self.learn(mine, fake)
        elif isinstance(recorded, dict) and isinstance(actual, dict):
            for key in recorded.keys() & actual.keys():
                self.learn(recorded[key], actual[key])

    def send(self, call: dict[str, Any]) -> httpx.Response:
        """Send a recorded call with its recorded values mapped, and the key it was made with."""
        headers = {}
        key = _key_for(call["name"])
        if key is not None:
            headers["Authorization"] = f"Bearer {self.stand_ins.get(key, key)}"
        body = self.substitute(call["body"])
        return self.client.request(
            call["method"],
            call["path"],
            params=self.substitute(call["params"]),
            json=body if body is not None else None,
            headers=headers,
        )


def _key_for(name: str) -> str | None:
    if name == "no_auth":
        return None
    if name == "bad_master_key":
        return "sk-not-the-master-key"
    return _CALL_KEYS.get(name, MASTER_KEY)


def _mask_times(value: Any) -> Any:
    if isinstance(value, str):
        return _TIMESTAMP.sub("<ts>", value)
    if isinstance(value, list):
        return [_mask_times(item) for item in value]
    if isinstance(value, dict):
        return {key: _mask_times(item) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    """One fake for the whole replay: the recordings build on each other."""
    with serve_in_thread(create_fake_litellm(MASTER_KEY)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield Replay(client)


def test_every_recorded_call_is_replayed_or_listed() -> None:
    """The replay covers the three files; nothing is skipped silently."""
    assert len(CALLS) == 61 + 30 + 16
    assert set(NOT_REPRODUCED) <= {name for name, _ in CALLS}


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
    if name in NOT_REPRODUCED:
        pytest.skip(NOT_REPRODUCED[name])
    assert response.status_code == call["status"], actual
    assert _mask_times(actual) == _mask_times(replay.substitute(call["response"]))
