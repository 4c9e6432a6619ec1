"""SCIM 2.0 service provider (RFC 7643/7644) for Okta, Entra ID and other identity providers.

`build_scim_router(settings, engine, on_write=..., metrics=...)` returns the FastAPI router the app mounts at
/scim/v2. Each bearer token of `scim.tokens` is one source, and so is each source named by `scim.oauth_clients`
(whose access tokens /oauth/token issues: syncd.scim.oauth, syncd.scim.token_endpoint): what it writes lands in
identities, groups and memberships under the source's name, in one transaction per request, and `on_write` is told
which LiteLLM user_ids changed. The service provider never calls LiteLLM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter

from syncd.scim.router import make_router
from syncd.scim.service import ScimService
from syncd.settings import Settings
from syncd.store.scim import ScimStore

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from syncd.metrics import Metrics

__all__ = ["build_scim_router"]


def build_scim_router(
    settings: Settings,
    engine: Engine,
    *,
    on_write: Callable[[set[str]], None] | None = None,
    metrics: Metrics | None = None,
) -> APIRouter:
    """The SCIM router over the store behind `engine`; mount it at /scim/v2."""
    service = ScimService(settings.scim, ScimStore(engine), on_write)
    return make_router(settings.scim, service, metrics)
