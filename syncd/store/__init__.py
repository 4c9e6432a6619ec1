"""The store: identities, groups and memberships per source, managed users, runs, journal and audit log.

The only package that imports SQLAlchemy.
"""

from syncd.store.db import (
    DatabaseDriverMissing,
    SchemaOutOfDate,
    make_engine,
    require_current_schema,
    schema_revision,
    sqlite_file,
    upgrade,
)

__all__ = [
    "DatabaseDriverMissing",
    "SchemaOutOfDate",
    "make_engine",
    "require_current_schema",
    "schema_revision",
    "sqlite_file",
    "upgrade",
]
