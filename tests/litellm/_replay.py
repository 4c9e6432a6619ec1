"""Replay of the recorded LiteLLM 1.108.7 admin calls against any proxy: the fake here, the real one in
tests/real_litellm. Generated values are mapped to stand-ins and timestamps masked (see test_contract_replay)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

__all__ = ["CALLS", "FILES", "MASTER_KEY", "RECORDINGS", "SHARED", "Replay", "mask_times"]

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


def _recorded_calls() -> list[tuple[str, dict[str, Any]]]:
    calls = []
    for name in FILES:
        for call in json.loads((RECORDINGS / name).read_text()):
            calls.append((f"{name.removesuffix('.json')}:{call['name']}", call))
    return calls


CALLS = _recorded_calls()


class Replay:
    """The replay's running state: the fake, its URL, and recorded generated values mapped to the fake's."""

    def __init__(self, client: httpx.Client, master_key: str = MASTER_KEY) -> None:
        self.client = client
        self.master_key = master_key
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
        key = _key_for(call["name"], self.master_key)
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


def _key_for(name: str, master_key: str = MASTER_KEY) -> str | None:
    if name == "no_auth":
        return None
    if name == "bad_master_key":
        return "sk-not-the-master-key"
    return _CALL_KEYS.get(name, master_key)


def mask_times(value: Any) -> Any:
    """The value with every timestamp replaced by `<ts>`."""
    if isinstance(value, str):
        return _TIMESTAMP.sub("<ts>", value)
    if isinstance(value, list):
        return [mask_times(item) for item in value]
    if isinstance(value, dict):
        return {key: mask_times(item) for key, item in value.items()}
    return value
