"""Fixtures of the reliability suite: one real slapd for the directory tests (tests/ldap's `_slapd` helper)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ldap"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _reliability import DIRECTORY_PEOPLE
from _slapd import SUFFIX, Slapd


def directory_ldif(count: int = DIRECTORY_PEOPLE) -> str:
    """ou=people with `count` people, ou=groups with llm-users (everyone), ou=empty with nobody."""
    entries = [
        f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n" for ou in ("people", "groups", "empty")
    ]
    members = []
    for i in range(count):
        dn = f"uid=p{i:05d},ou=people,{SUFFIX}"
        members.append(f"member: {dn}\n")
        person = f"uid: p{i:05d}\ncn: Person {i}\nsn: {i}\nmail: p{i:05d}@example.org\n"
        entries.append(f"dn: {dn}\nobjectClass: inetOrgPerson\n{person}")
    entries.append(
        f"dn: cn=llm-users,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: llm-users\n" + "".join(members)
    )
    return "\n".join(entries)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd of this module's own (tests may stop and restart it), loaded with `directory_ldif()`."""
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        pytest.skip("Debian's slapd is not installed")
    server = Slapd.create(tmp_path_factory.mktemp("slapd"))
    server.load(directory_ldif())
    server.start()
    yield server
    server.stop()
