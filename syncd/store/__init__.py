"""The store: identities, groups and memberships per source, managed users, runs, journal and audit log.

The only package that imports SQLAlchemy.
"""

from syncd.store.db import SchemaOutOfDate, make_engine, require_current_schema, schema_revision, upgrade

__all__ = ["SchemaOutOfDate", "make_engine", "require_current_schema", "schema_revision", "upgrade"]
