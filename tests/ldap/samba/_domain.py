"""A throwaway Samba Active Directory domain controller for the AD side of the LDAP source tests.

`SambaDomain.provision(root)` runs `samba-tool domain provision` into a temporary folder (its own smb.conf, private
dir, state and lock dirs; nothing under /etc/samba or /var/lib/samba is read or written), gives the LDAP server a
throwaway CA and a certificate for 127.0.0.1, and `start()` runs `samba -i -M single` in the foreground with only its
LDAP service on 127.0.0.1.

Samba's LDAP server ports are compiled in (389, 636 and the global catalog's 3268/3269; smb.conf has no `ldap port`),
so one domain at a time can run on a machine: `exclusive_ports()` holds a file lock for the life of the domain, so a
second test session (or an xdist worker) waits instead of failing to bind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import ldap3

__all__ = [
    "ADMIN_PASSWORD",
    "BASE_DN",
    "LDAP_PORTS",
    "SambaDomain",
    "SambaUnavailable",
    "exclusive_ports",
    "make_ca",
    "missing_programs",
]

REALM = "SYNCD.TEST"
NETBIOS_DOMAIN = "SYNCD"
BASE_DN = "DC=syncd,DC=test"
HOST = "127.0.0.1"
ADMIN_PASSWORD = "Adm1n-Throwaway-Passw0rd!"
#: compiled into Samba's LDAP server: ldap, ldaps, global catalog, global catalog over TLS
LDAP_PORTS = (389, 636, 3268, 3269)
SCHEMA_DIR = Path("/usr/share/samba/setup/ad-schema")
LOCK_FILE = Path("/tmp/syncd-tests-samba-ad-dc.lock")
#: UF_ACCOUNTDISABLE | UF_NORMAL_ACCOUNT and UF_NORMAL_ACCOUNT alone
UAC_DISABLED = 0x0202
UAC_ENABLED = 0x0200


class SambaUnavailable(RuntimeError):
    """The Samba AD DC could not be provisioned or started here."""


def missing_programs() -> list[str]:
    """What this fixture needs that is not installed: programs, and the AD schema files of samba-ad-provision."""
    missing = [name for name in ("samba", "samba-tool", "openssl") if _which(name) is None]
    if not SCHEMA_DIR.is_dir():
        missing.append(f"{SCHEMA_DIR} (package samba-ad-provision)")
    return missing


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _run(args: Sequence[str], *, timeout: float = 60) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SambaUnavailable(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def exclusive_ports(wait_s: float = 240) -> Iterator[None]:
    """Hold the machine-wide lock for Samba's fixed LDAP ports, then check nobody else holds the ports."""
    with LOCK_FILE.open("a") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SambaUnavailable(f"another test session held {LOCK_FILE} for {wait_s:.0f} s") from None
                time.sleep(0.5)
        try:
            busy = [port for port in LDAP_PORTS if not _port_free(port)]
            if busy:
                raise SambaUnavailable(f"ports {busy} on {HOST} are taken by another program; Samba needs them")
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Samba does: TIME_WAIT is no obstacle
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A throwaway CA: (certificate, key) under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )  # fmt: skip
    return cert, key


def _make_server_cert(folder: Path, ca_cert: Path, ca_key: Path, names: Sequence[str]) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / n for n in ("server.pem", "server.key", "server.csr", "server.ext"))
    san = ",".join(f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in names)
    ext.write_text(
        f"subjectAltName={san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _run(
        [
            "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={names[0]}",
        ]
    )  # fmt: skip
    _run(
        [
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext),
        ]
    )  # fmt: skip
    key.chmod(0o600)  # Samba refuses a TLS key anyone else can read
    return cert, key


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the test process dies, so port 636 is never left held."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class SambaDomain:
    """One provisioned domain in `root`, and the Samba process serving it once started."""

    root: Path
    ca_file: Path
    process: subprocess.Popen[bytes] | None = None

    base_dn: str = BASE_DN
    realm: str = REALM
    host: str = HOST
    admin_dn: str = f"CN=Administrator,CN=Users,{BASE_DN}"
    admin_password: str = ADMIN_PASSWORD

    @property
    def url(self) -> str:
        """The LDAPS URL (the only transport on which AD accepts simple binds)."""
        return f"ldaps://{self.host}:636"

    @property
    def plain_url(self) -> str:
        """The plain LDAP URL (StartTLS or SASL only: simple binds answer strongerAuthRequired)."""
        return f"ldap://{self.host}:389"

    @property
    def smb_conf(self) -> Path:
        """The domain's own smb.conf."""
        return self.root / "etc" / "smb.conf"

    @property
    def log_file(self) -> Path:
        """Samba's stdout and stderr."""
        return self.root / "samba.out"

    @classmethod
    def provision(cls, root: Path) -> SambaDomain:
        """Provision a fresh domain with its own TLS material under `root` (seconds)."""
        root.mkdir(parents=True, exist_ok=True)
        tls, run = root / "tls", root / "run"
        run.mkdir()
        ca_cert, ca_key = make_ca(tls, "syncd-test-ca")
        cert, key = _make_server_cert(tls, ca_cert, ca_key, [HOST, "localhost", f"dc1.{REALM.lower()}"])
        empty = root / "empty.conf"  # without -s, samba-tool would start from /etc/samba/smb.conf
        empty.write_text("")
        options = {
            "interfaces": HOST,
            "bind interfaces only": "yes",
            "ldb:nosync": "true",  # a throwaway domain needs no fsync: much faster writes on a busy disk
            "server services": "ldap",
            "tls enabled": "yes",
            "tls certfile": cert,
            "tls keyfile": key,
            "tls cafile": ca_cert,
            "pid directory": run,
            "ncalrpc dir": run / "ncalrpc",
            "winbindd socket directory": run / "winbindd",
            "ntp signd socket directory": run / "ntp_signd",
            "log file": root / "log.%m",
        }
        args = [
            "samba-tool", "domain", "provision", "-s", str(empty), f"--targetdir={root}",
            f"--realm={REALM}", f"--domain={NETBIOS_DOMAIN}", f"--adminpass={ADMIN_PASSWORD}",
            "--server-role=dc", "--dns-backend=NONE", "--use-rfc2307", "--host-name=dc1",
        ]  # fmt: skip
        args += [f"--option={name}={value}" for name, value in options.items()]
        _run(args, timeout=120)
        return cls(root=root, ca_file=ca_cert)

    def start(self, timeout_s: float = 60) -> None:
        """Start Samba in the foreground and wait until LDAPS answers a rootDSE read."""
        samba = _which("samba") or "samba"
        with self.log_file.open("wb") as out:
            self.process = subprocess.Popen(
                [samba, "-s", str(self.smb_conf), "-i", "-M", "single", "--debuglevel=1"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise SambaUnavailable(f"samba exited {self.process.returncode}:\n{self.log_tail()}")
            if self._ldaps_answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SambaUnavailable(f"LDAPS did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop Samba (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines Samba printed."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def _ldaps_answers(self) -> bool:
        try:
            with socket.create_connection((self.host, 636), timeout=1):
                pass
            conn = ldap3.Connection(self.server(), auto_bind=True, receive_timeout=5)
        except (OSError, ldap3.core.exceptions.LDAPException):
            return False
        conn.unbind()
        return True

    # ---- clients -------------------------------------------------------------------------------------------

    def server(self, ca_file: Path | None = None) -> ldap3.Server:
        """An ldap3 Server for the LDAPS port, verifying the certificate against `ca_file` (ours by default)."""
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file or self.ca_file))
        return ldap3.Server(self.url, use_ssl=True, tls=tls, get_info=ldap3.NONE, connect_timeout=5)

    def connect(self, user: str | None = None, password: str | None = None) -> ldap3.Connection:
        """A bound LDAPS connection, as the domain administrator unless told otherwise."""
        return ldap3.Connection(
            self.server(),
            user or self.admin_dn,
            password if user else self.admin_password,
            auto_bind=True,
            raise_exceptions=True,
            receive_timeout=30,
        )

    def samba_tool(self, *args: str) -> str:
        """Run samba-tool against the domain's own sam.ldb (the way an administrator on the DC would)."""
        return _run(["samba-tool", *args, "-s", str(self.smb_conf), "-H", str(self.root / "private" / "sam.ldb")])

    # ---- directory writes ------------------------------------------------------------------------------------

    def add_ou(self, conn: ldap3.Connection, name: str) -> str:
        """Create an organizationalUnit directly under the domain; its DN."""
        dn = f"OU={name},{self.base_dn}"
        conn.add(dn, ["top", "organizationalUnit"], {"ou": name})
        return dn

    def add_user(
        self,
        conn: ldap3.Connection,
        sam: str,
        *,
        mail: str | None = None,
        upn: str | None = None,
        display_name: str | None = None,
        password: str | None = None,
        disabled: bool = False,
        container: str | None = None,
    ) -> str:
        """Create a user account in CN=Users (or `container`); its DN."""
        dn = f"CN={sam},{container or 'CN=Users,' + self.base_dn}"
        attributes: dict[str, object] = {
            "sAMAccountName": sam,
            "userPrincipalName": upn or f"{sam}@{self.realm.lower()}",
            "displayName": display_name or sam,
        }
        if mail:
            attributes["mail"] = mail
        conn.add(dn, ["top", "person", "organizationalPerson", "user"], attributes)
        # AD keeps a new account disabled until it has a password; unicodePwd can only be written over TLS
        secret = password or f"Tmp-{uuid.uuid4().hex}-Aa1!"
        conn.modify(dn, {"unicodePwd": [(ldap3.MODIFY_REPLACE, [f'"{secret}"'.encode("utf-16-le")])]})
        uac = UAC_DISABLED if disabled else UAC_ENABLED
        conn.modify(dn, {"userAccountControl": [(ldap3.MODIFY_REPLACE, [str(uac)])]})
        return dn

    def add_group(self, conn: ldap3.Connection, name: str, container: str, members: Sequence[str] = ()) -> str:
        """Create a global security group in `container` with `members` (DNs); its DN."""
        dn = f"CN={name},{container}"
        conn.add(dn, ["top", "group"], {"sAMAccountName": name, "groupType": str(-2147483646)})
        if members:
            self.add_members(conn, dn, members)
        return dn

    def add_members(self, conn: ldap3.Connection, group_dn: str, members: Sequence[str]) -> None:
        """Add `members` (DNs) to a group."""
        conn.modify(group_dn, {"member": [(ldap3.MODIFY_ADD, list(members))]})

    def read(self, conn: ldap3.Connection, dn: str, *attributes: str) -> dict[str, list[object]]:
        """The raw values of `attributes` of one entry (bytes for binary attributes such as objectGUID)."""
        conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes))
        entry = conn.response[0]
        return {name: list(entry["raw_attributes"].get(name, [])) for name in attributes}

    def guid(self, conn: ldap3.Connection, dn: str) -> str:
        """The objectGUID of an entry in its usual string form (the 16 bytes read little-endian, as AD shows it)."""
        raw = self.read(conn, dn, "objectGUID")["objectGUID"][0]
        assert isinstance(raw, bytes)
        return str(uuid.UUID(bytes_le=raw))
