"""Engines and schema migrations: SQLite (WAL, foreign keys on) or PostgreSQL through psycopg."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["SchemaOutOfDate", "make_engine", "migrations_dir", "require_current_schema", "schema_revision", "upgrade"]


class SchemaOutOfDate(Exception):
    """The database schema is not at the migrations' head: run `syncd db upgrade`."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the store; SQLite gets WAL, a busy timeout and enforced foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrations_dir() -> Path:
    """The Alembic scripts: $SYNCD_MIGRATIONS, else migrations/ beside the syncd package (checkout or image)."""
    configured = os.environ.get("SYNCD_MIGRATIONS")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "migrations"


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to `revision` on this engine's database."""
    from alembic import command

    config = _alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """(the database's current revision or None, the migrations' head revision)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head() or ""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


#: the head revision of migrations/ (a test checks it): the schema check of every run compares one row with it,
#: without loading Alembic and the migration scripts (about 0.1 s of each `syncd sync`)
SCHEMA_HEAD = "0004"


def require_current_schema(engine: Engine) -> None:
    """Raise SchemaOutOfDate, with what to do, unless the schema is at head."""
    try:
        with engine.connect() as connection:
            if connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD:
                return
    except SQLAlchemyError:
        pass  # no version table: an empty database, told below
    current, head = schema_revision(engine)
    if current != head:
        where = "empty" if current is None else f"at revision {current}"
        raise SchemaOutOfDate(
            f"the database schema is {where}, but this syncd needs revision {head}: "
            "run `syncd db upgrade --config FILE`"
        )
