"""The LDAP source against a real Active Directory (a Samba AD DC): objectGUID, the disabled bit, nested groups,
LDAPS, uSNChanged. Each behaviour the source relies on is first checked raw with ldap3, so a failure says whether
the directory or the source is at fault.
"""

from __future__ import annotations

import re
import uuid
from types import ModuleType
from typing import Any

import ldap3
import pytest
from ldap3.core.exceptions import LDAPInsufficientAccessRightsResult

from syncd.model import Group, Identity, Snapshot
from syncd.settings.ldap import LdapSourceSettings

from ._domain import SambaDomain, make_ca
from .conftest import Directory

pytestmark = pytest.mark.samba

IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN


# ---- helpers ------------------------------------------------------------------------------------------------------


def ad_settings(domain: SambaDomain, directory: Directory, **changes: Any) -> LdapSourceSettings:
    """The `active_directory` source config of the test domain, binding as the non-admin sync account."""
    data: dict[str, Any] = {
        "name": "corp-ad",
        "url": domain.url,
        "ca_file": str(domain.ca_file),
        "bind_dn": directory.reader_dn,
        "bind_password": directory.reader_password,
        "dialect": "active_directory",
        "page_size": 3,  # CN=Users holds a dozen accounts: several pages
        "connect_timeout_s": 5,
        "search_timeout_s": 30,
        "users": {"base_dn": directory.users_dn},
        "groups": {"base_dn": directory.groups_dn, "nested": True},
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return LdapSourceSettings.model_validate(data)


def pull(ldap_source: ModuleType, settings: LdapSourceSettings, since: str | None = None) -> Snapshot:
    """One pull that must succeed and be complete."""
    snapshot = ldap_source.LdapSource(settings).pull(since=since)
    assert snapshot.complete, snapshot.problems
    assert snapshot.source == settings.name
    return snapshot


def by_user_id(snapshot: Snapshot) -> dict[str, Identity]:
    return {identity.user_id: identity for identity in snapshot.identities}


def by_name(snapshot: Snapshot) -> dict[str, Group]:
    return {group.name: group for group in snapshot.groups}


def refusal(ldap_source: ModuleType, settings: LdapSourceSettings) -> str:
    """The error text of a pull that must fail: a raised LdapSourceError, or an incomplete, empty snapshot."""
    try:
        snapshot = ldap_source.LdapSource(settings).pull()
    except ldap_source.LdapSourceError as exc:
        return "\n".join(_chain(exc))
    assert not snapshot.complete, "the pull should have failed"
    assert not snapshot.identities and not snapshot.groups
    return "\n".join(snapshot.problems)


def _chain(exc: BaseException | None) -> list[str]:
    texts = []
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return texts


def raw_entries(conn: ldap3.Connection, base: str, search: str, *attributes: str) -> list[dict[str, Any]]:
    conn.search(base, search, attributes=list(attributes) or [ldap3.NO_ATTRIBUTES])
    return [entry for entry in conn.response if entry["type"] == "searchResEntry"]


def usn(conn: ldap3.Connection, dn: str) -> int:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["uSNChanged"])
    return int(conn.response[0]["raw_attributes"]["uSNChanged"][0])


# ---- what the directory itself says (no syncd code involved) ----------------------------------------------------


def test_samba_returns_object_guid_as_16_raw_bytes(admin: ldap3.Connection, directory: Directory) -> None:
    raw = raw_entries(admin, directory.users["alice"], "(objectClass=*)", "objectGUID")[0]["raw_attributes"]
    value = raw["objectGUID"][0]
    assert isinstance(value, bytes) and len(value) == 16
    assert str(uuid.UUID(bytes_le=value)) == directory.guids["alice"]
    assert len(set(directory.guids.values())) == len(directory.guids)


def test_disabled_account_carries_user_account_control_bit_2(admin: ldap3.Connection, directory: Directory) -> None:
    def uac(name: str) -> int:
        entry = raw_entries(admin, directory.users[name], "(objectClass=*)", "userAccountControl")[0]
        return int(entry["raw_attributes"]["userAccountControl"][0])

    assert uac("carol") & 2
    assert not uac("alice") & 2
    disabled = raw_entries(admin, directory.users_dn, "(userAccountControl:1.2.840.113556.1.4.803:=2)")
    assert directory.users["carol"] in {entry["dn"] for entry in disabled}
    assert directory.users["alice"] not in {entry["dn"] for entry in disabled}


def test_in_chain_matching_rule_expands_nested_groups_and_survives_the_cycle(
    samba_domain: SambaDomain, directory: Directory
) -> None:
    reader = samba_domain.connect(directory.reader_dn, directory.reader_password)
    users, groups = directory.users, directory.groups

    def chain_members(group: str) -> set[str]:
        found = raw_entries(reader, samba_domain.base_dn, f"(memberOf:{IN_CHAIN}:={groups[group]})")
        return {entry["dn"] for entry in found}

    everyone = {users[n] for n in ("alice", "bob", "carol", "frank", "gina")}
    assert chain_members("llm-users") == everyone | {groups["llm-admins"], groups["llm-root"]}
    assert chain_members("cycle-a") == {users["alice"], users["bob"], groups["cycle-a"], groups["cycle-b"]}
    reader.unbind()


def test_sync_account_reads_but_cannot_write(samba_domain: SambaDomain, directory: Directory) -> None:
    reader = samba_domain.connect(directory.reader_dn, directory.reader_password)
    assert raw_entries(reader, directory.users["alice"], "(objectClass=*)", "mail")
    with pytest.raises(LDAPInsufficientAccessRightsResult):
        reader.modify(directory.users["alice"], {"mail": [(ldap3.MODIFY_REPLACE, ["x@syncd.test"])]})
    reader.unbind()


def test_simple_bind_without_tls_is_refused(samba_domain: SambaDomain, directory: Directory) -> None:
    server = ldap3.Server(samba_domain.plain_url, get_info=ldap3.NONE, connect_timeout=5)
    conn = ldap3.Connection(server, directory.reader_dn, directory.reader_password)
    assert not conn.bind()
    assert conn.result["description"] == "strongerAuthRequired"


def test_membership_change_moves_the_group_usn_not_the_member_usn(
    samba_domain: SambaDomain, admin: ldap3.Connection, directory: Directory
) -> None:
    user = samba_domain.add_user(admin, "usn-probe", mail="usn-probe@syncd.test")
    group = samba_domain.add_group(admin, "usn-probe-group", directory.groups_dn)
    user_before, group_before = usn(admin, user), usn(admin, group)
    samba_domain.add_members(admin, group, [user])
    assert usn(admin, group) > group_before
    assert usn(admin, user) == user_before


# ---- the source -------------------------------------------------------------------------------------------------


def test_full_pull_keys_people_by_object_guid_and_sam_account_name(
    ldap_source: ModuleType, samba_domain: SambaDomain, directory: Directory
) -> None:
    people = by_user_id(pull(ldap_source, ad_settings(samba_domain, directory)))
    alice = people["alice"]
    assert alice.external_id == directory.guids["alice"]
    assert alice.email == "alice@syncd.test"
    assert alice.display_name == "Alice Archer"
    assert alice.active is True
    assert people["bob"].external_id == directory.guids["bob"]
    for name in ("alice", "bob", "carol", "frank", "gina"):
        assert people[name].external_id == directory.guids[name]
        assert people[name].source == "corp-ad"


def test_user_principal_name_as_user_id(
    ldap_source: ModuleType, samba_domain: SambaDomain, directory: Directory
) -> None:
    settings = ad_settings(samba_domain, directory, users={"user_id_attribute": "userPrincipalName"})
    people = by_user_id(pull(ldap_source, settings))
    assert people["robert@syncd.test"].external_id == directory.guids["bob"]
    assert people["alice@syncd.test"].external_id == directory.guids["alice"]
    assert "bob" not in people


def test_disabled_account_is_inactive(ldap_source: ModuleType, samba_domain: SambaDomain, directory: Directory) -> None:
    people = by_user_id(pull(ldap_source, ad_settings(samba_domain, directory)))
    assert people["carol"].active is False
    assert people["carol"].external_id == directory.guids["carol"]
    assert people["frank"].active is True


def test_account_without_mail_is_skipped_and_counted(
    ldap_source: ModuleType, samba_domain: SambaDomain, admin: ldap3.Connection, directory: Directory
) -> None:
    settings = ad_settings(samba_domain, directory)
    snapshot = pull(ldap_source, settings)
    people = by_user_id(snapshot)
    assert "dave" not in people and "syncd-reader" not in people and "Administrator" not in people
    user_filter = settings.resolved().user_filter
    without_mail = raw_entries(admin, directory.users_dn, f"(&{user_filter}(!(mail=*)))")
    with_mail = raw_entries(admin, directory.users_dn, f"(&{user_filter}(mail=*))")
    assert len(without_mail) >= 4  # dave, syncd-reader, and Samba's own Administrator, Guest, krbtgt
    assert len(snapshot.identities) == len(with_mail)
    assert len(without_mail) in snapshot.counters.values(), snapshot.counters


def test_nested_groups_are_expanded_and_the_cycle_ends(
    ldap_source: ModuleType, samba_domain: SambaDomain, directory: Directory
) -> None:
    groups = by_name(pull(ldap_source, ad_settings(samba_domain, directory)))
    guid = directory.guids
    assert groups["llm-users"].members == {guid[n] for n in ("alice", "bob", "carol", "frank", "gina")}
    assert groups["llm-admins"].members == {guid["frank"], guid["gina"]}
    assert groups["llm-root"].members == {guid["gina"]}
    assert groups["cycle-a"].members == {guid["alice"], guid["bob"]}
    assert groups["cycle-b"].members == {guid["alice"], guid["bob"]}
    assert groups["llm-users"].external_id == guid["llm-users"]
    assert groups["llm-users"].dn is not None
    assert groups["llm-users"].dn.lower() == directory.groups["llm-users"].lower()


def test_without_nesting_only_direct_user_members_count(
    ldap_source: ModuleType, samba_domain: SambaDomain, directory: Directory
) -> None:
    settings = ad_settings(samba_domain, directory, groups={"nested": False})
    groups = by_name(pull(ldap_source, settings))
    guid = directory.guids
    assert groups["llm-users"].members == {guid["alice"], guid["bob"], guid["carol"]}
    assert groups["llm-admins"].members == {guid["frank"]}


def test_rename_keeps_the_object_guid(
    ldap_source: ModuleType, samba_domain: SambaDomain, admin: ldap3.Connection, directory: Directory
) -> None:
    samba_domain.add_user(admin, "hank", mail="hank@syncd.test")
    settings = ad_settings(samba_domain, directory)
    before = by_user_id(pull(ldap_source, settings))["hank"]
    samba_domain.samba_tool(
        "user",
        "rename",
        "hank",
        "--samaccountname=henry",
        "--force-new-cn=Henry Hill",
        "--mail-address=henry@syncd.test",
    )
    assert raw_entries(admin, f"CN=Henry Hill,{directory.users_dn}", "(sAMAccountName=henry)")
    after = by_user_id(pull(ldap_source, settings))
    assert "hank" not in after
    assert after["henry"].external_id == before.external_id
    assert after["henry"].email == "henry@syncd.test"


def test_incremental_pull_sees_a_membership_change_on_the_group(
    ldap_source: ModuleType, samba_domain: SambaDomain, admin: ldap3.Connection, directory: Directory
) -> None:
    ivy = samba_domain.add_user(admin, "ivy", mail="ivy@syncd.test")
    team = samba_domain.add_group(admin, "incr-team", directory.groups_dn, [directory.users["alice"]])
    settings = ad_settings(samba_domain, directory)
    source = ldap_source.LdapSource(settings)
    full = source.pull()
    assert full.complete and full.high_water_mark is not None
    assert by_name(full)["incr-team"].members == {directory.guids["alice"]}

    samba_domain.add_members(admin, team, [ivy])
    changed = source.pull(since=full.high_water_mark)
    assert changed.complete and changed.incremental
    groups = by_name(changed)
    assert set(groups) == {"incr-team"}, "only the group whose member list changed"
    assert groups["incr-team"].members == {directory.guids["alice"], samba_domain.guid(admin, ivy)}
    assert "alice" not in by_user_id(changed), "alice herself did not change"
    assert changed.high_water_mark is not None
    assert int(changed.high_water_mark) > int(full.high_water_mark)

    quiet = source.pull(since=changed.high_water_mark)
    assert quiet.complete and quiet.incremental
    assert not quiet.identities and not quiet.groups


def test_incremental_pull_sees_an_account_disabled(
    ldap_source: ModuleType, samba_domain: SambaDomain, admin: ldap3.Connection, directory: Directory
) -> None:
    samba_domain.add_user(admin, "jack", mail="jack@syncd.test")
    source = ldap_source.LdapSource(ad_settings(samba_domain, directory))
    full = source.pull()
    assert by_user_id(full)["jack"].active is True
    samba_domain.samba_tool("user", "disable", "jack")
    changed = source.pull(since=full.high_water_mark)
    assert changed.incremental
    assert set(by_user_id(changed)) == {"jack"}
    assert by_user_id(changed)["jack"].active is False


def test_ldaps_with_the_wrong_ca_is_refused(
    ldap_source: ModuleType, samba_domain: SambaDomain, directory: Directory, tmp_path: Any
) -> None:
    other_ca, _ = make_ca(tmp_path, "some-other-ca")
    message = refusal(ldap_source, ad_settings(samba_domain, directory, ca_file=str(other_ca)))
    assert "127.0.0.1" in message
    assert re.search(r"certificate|CERTIFICATE_VERIFY_FAILED|tls|ssl", message, re.IGNORECASE), message


def test_wrong_password_names_the_server_and_reason_not_the_password(
    ldap_source: ModuleType, samba_domain: SambaDomain, directory: Directory
) -> None:
    wrong = "Not-The-Reader-Passw0rd-7731"
    message = refusal(ldap_source, ad_settings(samba_domain, directory, bind_password=wrong))
    assert "127.0.0.1" in message
    assert re.search(r"invalid ?credentials", message, re.IGNORECASE), message
    assert wrong not in message
    assert directory.reader_password not in message
