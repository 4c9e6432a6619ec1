"""Serve the SCIM router alone, as `syncd serve` will: `python tests/scim/serve_app.py DB_URL PORT TOKEN`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from syncd.scim import build_scim_router
from syncd.settings import Settings, settings_from_dict
from syncd.store import make_engine, upgrade

__all__ = ["make_app", "scim_settings"]


def scim_settings(database_url: str, tokens: dict[str, str], **scim: Any) -> Settings:
    """Settings with SCIM on, one token per source name."""
    listed = [{"name": name, "token": token} for name, token in tokens.items()]
    return settings_from_dict({"database": {"url": database_url}, "scim": {"enabled": True, "tokens": listed, **scim}})


def make_app(
    settings: Settings, *, on_write: Callable[[set[str]], None] | None = None, metrics: Any = None
) -> tuple[FastAPI, Any]:
    """(A FastAPI app with the SCIM router at /scim/v2 over a migrated store, its engine)."""
    engine = make_engine(settings.database.url)
    upgrade(engine)
    app = FastAPI()
    app.include_router(build_scim_router(settings, engine, on_write=on_write, metrics=metrics), prefix="/scim/v2")
    return app, engine


if __name__ == "__main__":
    url, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    application, _engine = make_app(scim_settings(url, {"okta": token}))
    uvicorn.run(application, host="127.0.0.1", port=port, log_level="warning")
