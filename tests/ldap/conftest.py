"""Fixtures: one real slapd per session, and per test a fresh subtree with a helper to fill and change it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap3
import pytest
from _slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, Slapd
from _tree import Tree, big_ldif, next_number


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The session's slapd, with ou=big preloaded; stopped at the end."""
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        pytest.skip("Debian's slapd is not installed")
    server = Slapd.create(tmp_path_factory.mktemp("slapd"))
    server.load(big_ldif())
    server.start()
    yield server
    server.stop()


def _new_tree(slapd: Slapd, conn: ldap3.Connection) -> Tree:
    base = f"ou=t{next_number()},{SUFFIX}"
    for dn in (base, f"ou=people,{base}", f"ou=groups,{base}"):
        assert conn.add(dn, ["organizationalUnit"], {"ou": dn.split(",")[0][3:]}), conn.result
    return Tree(slapd, conn, base)


@pytest.fixture
def tree(slapd: Slapd) -> Iterator[Tree]:
    """A fresh `ou=tN` subtree with ou=people and ou=groups, for one test."""
    conn = ldap3.Connection(ldap3.Server(slapd.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    yield _new_tree(slapd, conn)
    conn.unbind()


@pytest.fixture
def tree_factory(slapd: Slapd) -> Iterator[Callable[[], Tree]]:
    """Makes a fresh subtree on each call (one per example of a property test)."""
    conn = ldap3.Connection(ldap3.Server(slapd.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    yield lambda: _new_tree(slapd, conn)
    conn.unbind()
