"""Fixtures of the real-LiteLLM suite: the URL of a real LiteLLM 1.108.7 proxy, or a skip with the reason.

CI (.ci/run) starts one with ../shared/real-litellm/start_litellm.sh and passes `SYNCD_REAL_LITELLM_URL` (and
`SYNCD_REAL_LITELLM_KEY`, default sk-master-1234). Point them only at a throwaway proxy: the contract replay first
deletes every user and team the proxy holds, so that its answers are those of the recording's empty proxy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "litellm"))  # the replay helper (_replay.py)

URL_VARIABLE, KEY_VARIABLE = "SYNCD_REAL_LITELLM_URL", "SYNCD_REAL_LITELLM_KEY"


@pytest.fixture(scope="session")
def real_url() -> str:
    """The real proxy's base URL (the suite skips when none was started)."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        pytest.skip(f"no real LiteLLM proxy: set {URL_VARIABLE} (.ci/run starts one with start_litellm.sh)")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def real_key() -> str:
    """The real proxy's master key."""
    return os.environ.get(KEY_VARIABLE, "").strip() or "sk-master-1234"


@pytest.fixture(scope="session")
def real_http(real_url: str, real_key: str) -> Iterator[httpx.Client]:
    """An HTTP client to the real proxy, authenticated with its master key."""
    with httpx.Client(base_url=real_url, headers={"Authorization": f"Bearer {real_key}"}, timeout=60) as client:
        try:
            client.get("/health/readiness").raise_for_status()
        except httpx.HTTPError as exc:
            pytest.fail(f"the real LiteLLM proxy at {real_url} does not answer: {exc}")
        yield client
