"""The LDAP source's pure parts: DNs, member values, AD range retrieval, expansion, presets, high-water marks."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from syncd.settings.ldap import LdapSourceSettings
from syncd.sources import ldap as ldap_source
from syncd.sources._ldap_graph import (
    DirectoryIndex,
    ExpansionCounters,
    GroupRecord,
    assemble_range,
    expand_group,
    member_key,
    normalise_dn,
    range_end,
)


@pytest.mark.parametrize(
    "spelling",
    [
        "uid=alice,ou=people,dc=example,dc=org",
        "UID=Alice, OU=People, DC=Example, DC=Org",
        " uid = alice ,ou=people,dc=example,dc=org ",
        "uid=\\61lice,ou=people,dc=example,dc=org",
    ],
)
def test_dn_spellings_normalise_to_one_form(spelling: str) -> None:
    assert normalise_dn(spelling) == "uid=alice,ou=people,dc=example,dc=org"


def test_escaped_separators_stay_part_of_the_value() -> None:
    assert normalise_dn("CN=Smith\\, John,OU=People") == normalise_dn("cn=smith\\2C john,ou=people")
    assert normalise_dn("cn=smith\\, john,ou=people") != normalise_dn("cn=smith,cn=john,ou=people")
    assert normalise_dn("cn=a+uid=b,dc=x") == normalise_dn("UID=b+CN=a,DC=x")


def test_member_keys() -> None:
    assert member_key("uid=a,dc=x#'0101'B", by_uid=False) == "uid=a,dc=x"
    assert member_key(" Alice ", by_uid=True) == "alice"


def test_range_end() -> None:
    assert range_end("member;range=0-1499") == 1499
    assert range_end("member;range=1500-*") is None
    assert range_end("member") is None


def ranged_directory(values: list[bytes], step: int = 1500) -> Any:
    """A fake `fetch(start)` that answers like Active Directory, `step` values per range."""
    asked: list[int] = []

    def fetch(start: int) -> tuple[str, list[bytes]]:
        asked.append(start)
        end = start + step - 1
        if end >= len(values) - 1:
            return f"member;range={start}-*", values[start:]
        return f"member;range={start}-{end}", values[start : end + 1]

    return fetch, asked


def test_range_retrieval_assembles_every_value() -> None:
    values = [f"cn=u{i},dc=x".encode() for i in range(4000)]
    fetch, asked = ranged_directory(values)

    assembled = assemble_range("member;range=0-1499", values[:1500], fetch)

    assert assembled == values
    assert asked == [1500, 3000]


def test_range_retrieval_refuses_an_empty_middle_range() -> None:
    with pytest.raises(ValueError, match="empty range"):
        assemble_range("member;range=0-1", [b"a", b"b"], lambda start: ("member;range=2-3", []))


class FakeConnection:
    """Answers base searches for `member;range=START-*` from a list of values, 1,500 at a time."""

    def __init__(self, values: list[bytes]) -> None:
        self.fetch, self.asked = ranged_directory(values)
        self.result: dict[str, Any] = {}
        self.response: list[dict[str, Any]] = []

    def search(self, dn: str, _filter: str, _scope: Any, *, attributes: list[str], **_: Any) -> bool:
        start = int(attributes[0].split("=")[1].split("-")[0])
        name, values = self.fetch(start)
        self.result = {"result": 0}
        self.response = [{"type": "searchResEntry", "dn": dn, "raw_attributes": {name: values, "member": []}}]
        return True


def active_directory_source(**groups: Any) -> ldap_source.LdapSource:
    """An LdapSource with the active_directory preset (never connected)."""
    settings = LdapSourceSettings.model_validate(
        {
            "name": "ad",
            "url": "ldaps://dc.example.org",
            "dialect": "active_directory",
            "users": {"base_dn": "dc=example,dc=org"},
            "groups": {"base_dn": "dc=example,dc=org", **groups},
        }
    )
    return ldap_source.LdapSource(settings)


def test_source_reads_every_range_of_a_large_ad_group() -> None:
    values = [f"CN=u{i},CN=Users,DC=example,DC=org".encode() for i in range(5000)]
    conn = FakeConnection(values)
    entry = {"dn": "CN=big,DC=example,DC=org", "raw_attributes": {"member;range=0-1499": values[:1500], "member": []}}

    found = active_directory_source()._member_values(conn, entry, ldap_source._raw(entry))  # type: ignore[arg-type]

    assert found == values and conn.asked == [1500, 3000, 4500]


def test_object_guid_becomes_the_canonical_guid_string() -> None:
    guid = uuid.uuid4()
    raw = {"objectguid": [guid.bytes_le]}

    assert ldap_source._external_id(raw, "objectGUID") == str(guid)


def index_of(groups: dict[str, list[str]], users: list[str]) -> DirectoryIndex:
    """An index where users are `uid=NAME` and groups `cn=NAME`, members given by name."""
    index = DirectoryIndex()
    for user in users:
        index.put_user(user, f"uid={user}", True)
    for name, members in groups.items():
        keys = frozenset(f"cn={m}" if m in groups else f"uid={m}" for m in members)
        index.put_group(GroupRecord(name, name, f"cn={name}", f"cn={name}", keys))
    return index


def test_expansion_handles_cycles_diamonds_and_dangling_members() -> None:
    index = index_of({"a": ["x", "b", "c"], "b": ["y", "d"], "c": ["d", "a"], "d": ["z", "ghost"]}, ["x", "y", "z"])
    counters = ExpansionCounters()
    direct: dict[str, Any] = {}

    expanded = {g: expand_group(index, g, nested=True, max_depth=10, direct=direct, counters=counters) for g in "abcd"}

    assert expanded == {"a": {"x", "y", "z"}, "b": {"y", "z"}, "c": {"x", "y", "z"}, "d": {"z"}}
    assert (counters.group_cycles, counters.dangling_members, counters.depth_limit_reached) == (2, 1, 0)
    assert index.parents_of(["d"]) == {"a", "b", "c"}


_VIA_PROBE = """
import sys
sys.path.insert(0, "tests/ldap")
from test_ldap_logic import index_of
from syncd.sources._ldap_graph import ExpansionCounters, expand_group
index = index_of({"top": [f"k{i}" for i in range(9, -1, -1)], **{f"k{i}": ["shared"] for i in range(10)}}, ["shared"])
via = {}
expand_group(index, "top", nested=True, max_depth=5, direct={}, counters=ExpansionCounters(), via=via)
print(via["shared"])
"""


def test_via_is_the_same_child_whatever_the_hash_seed() -> None:
    """A member reachable through several children records the same one in every process (a no-op pull stays one)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    seen = set()
    for seed in range(6):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        done = subprocess.run(
            [sys.executable, "-c", _VIA_PROBE], capture_output=True, text=True, env=env, cwd=root, check=True
        )
        seen.add(done.stdout.strip())
    assert seen == {"k0"}


def test_presets_fill_what_the_config_leaves_out() -> None:
    attrs = active_directory_source().attrs

    assert attrs.user_external_id_attribute == "objectGUID"
    assert attrs.user_id_attribute == "sAMAccountName"
    assert attrs.disabled_filter == "(userAccountControl:1.2.840.113556.1.4.803:=2)"
    assert (attrs.group_filter, attrs.change_attribute) == ("(objectClass=group)", "uSNChanged")
    assert active_directory_source(member_attribute="memberUid").attrs.member_is_uid


def test_openldap_group_filter_follows_the_member_attribute() -> None:
    settings = LdapSourceSettings.model_validate(
        {
            "name": "c",
            "url": "ldap://h",
            "users": {"base_dn": "o=x", "disabled_filter": ""},
            "groups": {"base_dn": "o=x", "member_attribute": "uniqueMember"},
        }
    )

    attrs = settings.resolved()

    assert attrs.group_filter == "(objectClass=groupOfUniqueNames)"
    assert attrs.disabled_filter is None and attrs.user_external_id_attribute == "entryUUID"


def test_custom_dialect_names_what_it_needs() -> None:
    with pytest.raises(ValidationError, match=r"users\.filter, users\.user_id_attribute"):
        LdapSourceSettings.model_validate(
            {"name": "c", "url": "ldap://h", "dialect": "custom", "users": {"base_dn": "o=x"}}
        )


def test_timestamp_mark_goes_back_by_the_pull_and_never_backwards() -> None:
    assert ldap_source._timestamp_mark("20260102030405Z", timedelta(seconds=65), None) == "ts:20260102030300Z"
    assert ldap_source._timestamp_mark(None, timedelta(0), "ts:20250101000000Z") == "ts:20250101000000Z"
    assert ldap_source._timestamp_mark("20240101000000Z", timedelta(0), "ts:20250101000000Z") == "ts:20250101000000Z"


@pytest.mark.parametrize(
    ("uri", "harmless"),
    [
        ("ldap://DomainDnsZones.corp.example.com/DC=DomainDnsZones,DC=corp,DC=example,DC=com", True),
        ("ldap://ForestDnsZones.corp.example.com/DC=ForestDnsZones,DC=corp,DC=example,DC=com", True),
        ("ldap://corp.example.com/CN=Configuration,DC=corp,DC=example,DC=com", True),
        ("ldap://other.example.com/OU=People,DC=other,DC=example,DC=com", False),
    ],
)
def test_only_ads_own_partitions_are_harmless_referrals(uri: str, harmless: bool) -> None:
    assert bool(ldap_source._AD_PARTITIONS.search(uri)) is harmless
