"""Engines and schema migrations: SQLite (WAL, foreign keys on) or PostgreSQL through psycopg."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

__all__ = [
    "DatabaseDriverMissing",
    "SchemaOutOfDate",
    "in_chunks",
    "make_engine",
    "migrations_dir",
    "require_current_schema",
    "schema_revision",
    "sqlite_file",
    "upgrade",
]

#: values per IN (...) list: under SQLite's historical limit of 999 bound parameters per statement
IN_CHUNK = 900


def in_chunks(query: Any, column: Any, values: Sequence[Any]) -> list[Any]:
    """`query` restricted to `column IN values`, as one query per IN_CHUNK values (none for no values)."""
    return [query.where(column.in_(values[i : i + IN_CHUNK])) for i in range(0, len(values), IN_CHUNK)]


class SchemaOutOfDate(Exception):
    """The database schema is not at the migrations' head: run `syncd db upgrade`."""


class DatabaseDriverMissing(Exception):
    """A postgresql:// URL without the PostgreSQL driver installed (the `postgres` extra)."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the store; SQLite gets WAL, a busy timeout and enforced foreign keys.

    psycopg (the `postgres` extra) is imported only here, for a postgresql URL: a SQLite-only install needs none.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        engine = create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        raise DatabaseDriverMissing(
            f"database.url is PostgreSQL but its driver ({exc.name}) is not installed: pip install 'syncd[postgres]'"
        ) from None
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


#: a pooled PostgreSQL connection idle for longer than this is pinged before use
IDLE_PING_S = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle in the pool for more than IDLE_PING_S.

    SQLAlchemy's pool_pre_ping pings on every checkout: one more round trip for each SCIM request (measured: POST
    0.76x -> 0.82x and PATCH 0.94x -> 0.97x of the reference server's throughput without it). A connection in steady
    use is live; one that sat idle (a restart of PostgreSQL, a proxy's idle timeout) is checked, and a dead one is
    replaced before the request sees it. A server lost while connections are in steady use fails the requests then
    in flight (SCIM answers 503 with Retry-After) and the pool is renewed at once.
    """
    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["syncd_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("syncd_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return  # just connected, or in steady use
        dbapi_error: Any = engine.dialect.loaded_dbapi.Error
        try:
            engine.dialect.do_ping(dbapi_connection)
        except dbapi_error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(str(exc)) from exc  # the pool connects again and retries the checkout
            raise


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database and database != ":memory:" and not database.startswith("file:") else None


def migrations_dir() -> Path:
    """The Alembic scripts: $SYNCD_MIGRATIONS if set, else those shipped in the package (`syncd.migrations`).

    In a checkout (an editable install) `syncd.migrations` is the repository's top-level migrations/ folder, mapped
    by pyproject's package-dir; in a wheel it is a package of its own.
    """
    configured = os.environ.get("SYNCD_MIGRATIONS")
    if configured:
        return Path(configured)
    from importlib.util import find_spec

    spec = find_spec("syncd.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
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
SCHEMA_HEAD = "0009"


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
