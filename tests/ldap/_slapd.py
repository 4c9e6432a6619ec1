"""A throwaway OpenLDAP server for the LDAP source tests (and the benchmark).

`Slapd.create(root)` writes a throwaway CA and a server certificate for 127.0.0.1, a private cn=config (slapadd
-n0: mdb, memberof, refint, ppolicy and syncprov overlays, StartTLS and LDAPS) and an empty suffix; `load(ldif)`
bulk-loads entries with `slapadd -q` while the server is stopped; `start()` runs `slapd -d 0` in the foreground on
two free loopback ports (ldap:// and ldaps://). The sync account cn=syncd is limited to 1,000 entries per search
unless it pages; syncprov keeps a session log of deletes, so a content sync with a recent cookie is told them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["ADMIN_DN", "ADMIN_PASSWORD", "LIMITED_DN", "SUFFIX", "SYNC_DN", "SYNC_PASSWORD", "Slapd", "make_ca"]

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
SYNC_DN = f"cn=syncd,{SUFFIX}"
SYNC_PASSWORD = "s3cret-Sync-Pw"
#: a second reader whose paged searches are capped too, to provoke a size limit
LIMITED_DN = f"cn=limited,{SUFFIX}"
#: deletes syncprov remembers, so that a content sync with a recent cookie is told them (refreshDeletes) rather
#: than sent every unchanged entry's UUID (refreshPresent)
SESSIONLOG = 10_000
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
LITELLM_SCHEMA = Path(__file__).resolve().parents[2] / "config" / "ldap" / "litellm.ldif"


def make_ca(folder: Path, name: str) -> Path:
    """A throwaway CA (key and certificate) in `folder`; returns the certificate's path."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
    )
    return cert


def _server_certificate(folder: Path, ca: Path) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / n for n in ("server.key", "server.csr", "server.pem", "san.cnf"))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        "/CN=localhost",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca.with_suffix(".key"),
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        ext,
    )
    return cert, key


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_ldif(root: Path, cert: Path, key: Path, ca: Path) -> str:
    schemas = "".join(f"include: file:///etc/ldap/schema/{name}.ldif\n\n" for name in SCHEMAS)
    schemas += f"include: file://{LITELLM_SCHEMA}\n\n"  # the schema syncd ships for grants kept in the directory
    database = "olcDatabase={1}mdb,cn=config"
    return f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {root}/slapd.pid
olcTLSCACertificateFile: {ca}
olcTLSCertificateFile: {cert}
olcTLSCertificateKeyFile: {key}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: refint
olcModuleLoad: ppolicy
olcModuleLoad: syncprov

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: to * by * none

dn: {database}
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcDbDirectory: {root}/data
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PASSWORD}
olcDbMaxSize: 4294967296
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: entryUUID eq
olcDbIndex: entryCSN eq
olcDbIndex: uid eq
olcDbIndex: member eq
olcLimits: dn.exact="{SYNC_DN}" size.soft=1000 size.hard=1000 size.pr=noEstimate size.prtotal=unlimited
olcLimits: dn.exact="{LIMITED_DN}" size.soft=1000 size.hard=1000 size.pr=noEstimate size.prtotal=1000
olcAccess: to attrs=userPassword by self read by anonymous auth by * none
olcAccess: to * by * read

dn: olcOverlay={{0}}memberof,{database}
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: TRUE

dn: olcOverlay={{1}}refint,{database}
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {{1}}refint
olcRefintAttribute: member uniqueMember

dn: olcOverlay={{2}}ppolicy,{database}
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{2}}ppolicy

dn: olcOverlay={{3}}syncprov,{database}
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {{3}}syncprov
olcSpCheckpoint: 100 1
olcSpSessionlog: {SESSIONLOG}
"""


def _base_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: {SYNC_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: syncd\n"
        f"userPassword: {SYNC_PASSWORD}\n",
        f"dn: {LIMITED_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: limited\n"
        f"userPassword: {SYNC_PASSWORD}\n",
    ]
    return "\n".join(entries)


class Slapd:
    """One private slapd: its folder, certificates and ports; start, stop and bulk load."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "slapd.d"
        self.ca = root / "tls" / "ca.pem"
        self.port = free_port()
        self.tls_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, root: Path) -> Slapd:
        """Certificates, cn=config and the suffix with the two reader accounts, ready to start."""
        server = cls(root)
        tls = root / "tls"
        ca = make_ca(tls, "ca")
        cert, key = _server_certificate(tls, ca)
        server.config.mkdir(parents=True)
        (root / "data").mkdir()
        ldif = root / "config.ldif"
        ldif.write_text(_config_ldif(root, cert, key, ca))
        _run("slapadd", "-n0", "-F", server.config, "-l", ldif)
        server.load(_base_ldif())
        return server

    @property
    def url(self) -> str:
        """ldap:// URL (StartTLS capable)."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """ldaps:// URL."""
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def load(self, ldif: str | Path) -> None:
        """Bulk-load entries with `slapadd -q` (the server must be stopped; overlays do not run)."""
        path = ldif if isinstance(ldif, Path) else self.root / "load.ldif"
        if not isinstance(ldif, Path):
            path.write_text(ldif)
        _run("slapadd", "-q", "-F", self.config, "-b", SUFFIX, "-l", path)

    def start(self, timeout: float = 10) -> None:
        """Run slapd in the foreground on both ports; returns once it accepts connections."""
        slapd = shutil.which("slapd") or "/usr/sbin/slapd"
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"
        log = (self.root / "slapd.log").open("ab")
        self.process = subprocess.Popen(
            [slapd, "-F", str(self.config), "-h", urls, "-d", "0"], stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited {self.process.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"slapd did not listen within {timeout} s: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGKILL to simulate a crash) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self) -> str:
        """The end of slapd's output, for error messages."""
        path = self.root / "slapd.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _run(*args: object) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {done.returncode}: {done.stderr[-2000:]}")
