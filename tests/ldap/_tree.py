"""The per-test subtree helper and bulk LDIF of the LDAP source tests (kept out of conftest so tests import it)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import ldap3
import yaml
from _slapd import SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

from syncd.settings.ldap import LdapSourceSettings
from syncd.sources.ldap import LdapSource

__all__ = ["BIG_USERS", "Tree", "big_ldif", "next_number"]

_counter = itertools.count(1)


def next_number() -> int:
    """A number no other subtree or group of this session has."""
    return next(_counter)


#: users bulk-loaded under ou=big before the server starts (past the 1,000-entry limit of the sync account)
BIG_USERS = 1_150


def big_ldif(count: int = BIG_USERS) -> str:
    """ou=big with `count` inetOrgPersons, for the paged-search and size-limit tests."""
    entries = [f"dn: ou=big,{SUFFIX}\nobjectClass: organizationalUnit\nou: big\n"]
    for i in range(count):
        entries.append(
            f"dn: uid=big{i:05d},ou=big,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: big{i:05d}\ncn: Big {i}\n"
            f"sn: {i}\nmail: big{i:05d}@example.org\n"
        )
    return "\n".join(entries)


class Tree:
    """One test's own subtree `ou=tN`: people and groups under it, changed through an admin connection."""

    def __init__(self, server: Slapd, conn: ldap3.Connection, base: str) -> None:
        self.server = server
        self.conn = conn
        self.base = base
        self.people = f"ou=people,{base}"
        self.groups = f"ou=groups,{base}"

    def _ok(self, done: bool) -> None:
        assert done, self.conn.result

    def add_user(self, uid: str, *, mail: str | None = "", cn: str | None = None, **extra: Any) -> str:
        """Add an inetOrgPerson (mail defaults to uid@example.org; None leaves it out); returns its DN."""
        dn = f"uid={uid},{self.people}"
        attrs: dict[str, Any] = {"uid": uid, "cn": cn or uid.title(), "sn": uid, **extra}
        if mail is not None:
            attrs["mail"] = mail or f"{uid}@example.org"
        self._ok(self.conn.add(dn, ["inetOrgPerson"], attrs))
        return dn

    def add_group(self, cn: str, members: list[str], *, kind: str = "groupOfNames") -> str:
        """Add a group: groupOfNames (member DNs), groupOfUniqueNames (uniqueMember) or posixGroup (memberUid)."""
        dn = f"cn={cn},{self.groups}"
        attribute = {"groupOfNames": "member", "groupOfUniqueNames": "uniqueMember", "posixGroup": "memberUid"}[kind]
        attrs: dict[str, Any] = {"cn": cn}
        if members or kind == "posixGroup":
            attrs[attribute] = members
        if kind == "posixGroup":
            attrs["gidNumber"] = 1000 + next_number()
        if kind == "groupOfNames" and not members:
            attrs["member"] = [""]  # groupOfNames needs one member; an empty value is the usual placeholder
        self._ok(self.conn.add(dn, [kind], attrs))
        return dn

    def add_member(self, group: str, member: str, attribute: str = "member") -> None:
        """Add one member value to a group."""
        self._ok(self.conn.modify(group, {attribute: [(MODIFY_ADD, [member])]}))

    def remove_member(self, group: str, member: str, attribute: str = "member") -> None:
        """Remove one member value from a group."""
        self._ok(self.conn.modify(group, {attribute: [(MODIFY_DELETE, [member])]}))

    def replace(self, dn: str, **attrs: Any) -> None:
        """Replace attributes of an entry."""
        self._ok(self.conn.modify(dn, {name: [(MODIFY_REPLACE, value)] for name, value in attrs.items()}))

    def rename(self, dn: str, new_rdn: str) -> str:
        """Rename an entry in place; returns its new DN."""
        self._ok(self.conn.modify_dn(dn, new_rdn))
        return f"{new_rdn},{dn.split(',', 1)[1]}"

    def delete(self, dn: str) -> None:
        """Delete an entry."""
        self._ok(self.conn.delete(dn))

    def entry_uuid(self, dn: str) -> str:
        """The entry's entryUUID, read as the admin."""
        self._ok(self.conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["entryUUID"]))
        return str(self.conn.entries[0].entryUUID.value)

    def settings(self, **overrides: Any) -> LdapSourceSettings:
        """Settings for a source over this subtree, bound as the limited sync account over StartTLS (content sync
        off unless asked for)."""
        group_overrides = overrides.pop("groups", {})
        groups = None if group_overrides is None else {"base_dn": self.groups, "nested": True, **group_overrides}
        users = {"base_dn": self.people, **overrides.pop("users", {})}
        raw: dict[str, Any] = {
            "name": "corp",
            "url": self.server.url,
            "start_tls": True,
            "ca_file": str(self.server.ca),
            "bind_dn": SYNC_DN,
            "bind_password": SYNC_PASSWORD,
            "page_size": 100,
            "content_sync": "off",  # the plain searches; tests of content sync ask for it
            "users": users,
            "groups": groups,
            **overrides,
        }
        return LdapSourceSettings.model_validate(raw)

    def source(self, **overrides: Any) -> LdapSource:
        """An LdapSource over this subtree."""
        return LdapSource(self.settings(**overrides))


def write_cli_config(tree: Tree, folder: Path, litellm_url: str, master_key: str, *, group: str, **source: Any) -> Path:
    """A syncd.yaml in `folder` for the CLI: SQLite there, the LiteLLM at `litellm_url`, the LDAP source corp over
    StartTLS to `tree` (its bind password from $BIND_PW, extra source settings from `source`), and one mapping of
    `group`."""
    ldap = {
        "name": "corp",
        "url": tree.server.url,
        "start_tls": True,
        "ca_file": str(tree.server.ca),
        "bind_dn": SYNC_DN,
        "bind_password": "${BIND_PW}",
        **source,
        "users": {"base_dn": tree.people},
        "groups": {"base_dn": tree.groups, "nested": True},
    }
    config = {
        "database": {"url": f"sqlite:///{folder}/syncd.db"},
        "litellm": {"url": litellm_url, "master_key": master_key},
        "ldap": [ldap],
        "mappings": [{"group": group, "models": ["gpt-4o"]}],
    }
    path = folder / "syncd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
