"""Serve the SCIM router alone, as `syncd serve` will: `python -m tests.scim.serve_app DB_URL PORT TOKEN`."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from syncd.scim import build_scim_router
from syncd.settings import settings_from_dict
from syncd.store import make_engine, upgrade

__all__ = ["make_app"]


def make_app(database_url: str, token: str, *, source: str = "okta", **scim: object) -> FastAPI:
    """A FastAPI app with the SCIM router at /scim/v2 over a migrated store."""
    settings = settings_from_dict(
        {
            "database": {"url": database_url},
            "scim": {"enabled": True, "tokens": [{"name": source, "token": token}], **scim},
        }
    )
    engine = make_engine(database_url)
    upgrade(engine)
    app = FastAPI()
    app.include_router(build_scim_router(settings, engine), prefix="/scim/v2")
    return app


if __name__ == "__main__":
    url, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    uvicorn.run(make_app(url, token), host="127.0.0.1", port=port, log_level="warning")
