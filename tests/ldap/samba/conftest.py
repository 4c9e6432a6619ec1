"""Fixtures: one throwaway Samba AD domain for this package's tests, filled with the people and groups they read.

Package scope rather than session: the domain (and the machine-wide lock on Samba's fixed ports) is released as soon
as the last AD test has run, not when a long test session ends, so concurrent sessions wait for seconds, not minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType

import ldap3
import pytest

import syncd.sources.ldap as ldap_module

from ._domain import SambaDomain, exclusive_ports, missing_programs

READER_PASSWORD = "Reader-Throwaway-Passw0rd!"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "samba: needs Debian's Samba AD DC (samba-ad-dc, samba-ad-provision)")


@pytest.fixture(scope="package")
def samba_domain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDomain]:
    """A freshly provisioned AD domain served by Samba on 127.0.0.1 (ldaps:636); stopped at the end."""
    missing = missing_programs()
    if missing:
        pytest.skip(f"Samba AD DC not installed (missing {', '.join(missing)}); see scripts/install-samba-ad-dc")
    if os.geteuid() != 0:
        pytest.skip("the Samba AD DC runs as root only (it listens on ports 389 and 636)")
    started = time.monotonic()
    domain = SambaDomain.provision(tmp_path_factory.mktemp("samba-ad") / "dc")
    with exclusive_ports():
        domain.start()
        print(f"samba AD DC up in {time.monotonic() - started:.1f} s at {domain.url}")
        try:
            yield domain
        finally:
            domain.stop()


@dataclass
class Directory:
    """The test people and groups: DNs by short name, and the password of the non-admin sync account."""

    users_dn: str
    groups_dn: str
    users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    guids: dict[str, str] = field(default_factory=dict)
    reader_dn: str = ""
    reader_password: str = READER_PASSWORD


@pytest.fixture(scope="package")
def directory(samba_domain: SambaDomain) -> Directory:
    """Users in CN=Users (with and without mail, one disabled), nested groups and a cycle in OU=Groups.

    llm-users  = alice, bob, carol, llm-admins        llm-admins = frank, llm-root        llm-root = gina
    cycle-a    = alice, cycle-b                        cycle-b    = bob, cycle-a
    dave has no mail; carol is disabled (by samba-tool, the way an administrator does it); syncd-reader is a
    plain Domain User, the account the source binds as.
    """
    domain = samba_domain
    conn = domain.connect()
    found = Directory(users_dn=f"CN=Users,{domain.base_dn}", groups_dn=domain.add_ou(conn, "Groups"))
    people: dict[str, dict[str, str]] = {
        "alice": {"mail": "alice@syncd.test", "name": "Alice Archer"},
        "bob": {"mail": "bob@syncd.test", "upn": "robert@syncd.test", "name": "Bob Baker"},
        "carol": {"mail": "carol@syncd.test"},
        "dave": {},
        "frank": {"mail": "frank@syncd.test"},
        "gina": {"mail": "gina@syncd.test"},
    }
    for name, attributes in people.items():
        found.users[name] = domain.add_user(
            conn, name, mail=attributes.get("mail"), upn=attributes.get("upn"), display_name=attributes.get("name")
        )
    found.reader_dn = domain.add_user(conn, "syncd-reader", password=READER_PASSWORD)
    domain.samba_tool("user", "disable", "carol")
    u, g = found.users, found.groups
    g["llm-root"] = domain.add_group(conn, "llm-root", found.groups_dn, [u["gina"]])
    g["llm-admins"] = domain.add_group(conn, "llm-admins", found.groups_dn, [u["frank"], g["llm-root"]])
    g["llm-users"] = domain.add_group(
        conn, "llm-users", found.groups_dn, [u["alice"], u["bob"], u["carol"], g["llm-admins"]]
    )
    g["cycle-a"] = domain.add_group(conn, "cycle-a", found.groups_dn, [u["alice"]])
    g["cycle-b"] = domain.add_group(conn, "cycle-b", found.groups_dn, [u["bob"], g["cycle-a"]])
    domain.add_members(conn, g["cycle-a"], [g["cycle-b"]])
    # the sync account's first logon writes lastLogonTimestamp (a USN); have it happen here, not inside a test
    domain.connect(found.reader_dn, READER_PASSWORD).unbind()
    for name, dn in {**found.users, **found.groups}.items():
        found.guids[name] = domain.guid(conn, dn)
    conn.unbind()
    return found


@pytest.fixture
def admin(samba_domain: SambaDomain) -> Iterator[ldap3.Connection]:
    """An LDAPS connection bound as the domain administrator, for the tests' own writes and raw reads."""
    conn = samba_domain.connect()
    yield conn
    conn.unbind()


@pytest.fixture
def ldap_source() -> ModuleType:
    """The module under test, syncd.sources.ldap."""
    return ldap_module
