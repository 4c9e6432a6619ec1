"""The demo: syncd end to end on this machine with the embedded defaults, showing what it does at each step.

A throwaway OpenLDAP directory (Debian's slapd) with the people of examples/directory.ldif, the fake LiteLLM
stand-in (syncd.testing.fake_litellm, NOT a real LiteLLM), and SQLite in a temporary folder. It runs the commands an
operator would: db upgrade, check-config, plan, sync; then changes the directory (a promotion, a leaver, a locked
account, a new hire) and syncs again, including a run held by the deactivation guard; then explains one person.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import ldap3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ldap"))
from _slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd  # noqa: E402

MASTER_KEY = "sk-demo-master-key"
PEOPLE, GROUPS = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"


def config(folder: Path, slapd: Slapd, litellm_url: str) -> str:
    """The demo's config file: SQLite, one LDAP source over StartTLS, three mapped groups."""
    return f"""\
database:
  url: sqlite:///{folder}/syncd.db
litellm:
  url: {litellm_url}
  master_key: ${{LITELLM_MASTER_KEY}}
ldap:
  - name: corp
    url: {slapd.url}
    start_tls: true
    ca_file: {slapd.ca}
    bind_dn: {SYNC_DN}
    bind_password: ${{LDAP_BIND_PASSWORD}}
    dialect: openldap
    users: {{base_dn: "{PEOPLE}"}}
    groups: {{base_dn: "{GROUPS}", nested: true}}
mappings:
  - group: llm-admins
    role: proxy_admin
  - group: llm-users
    role: internal_user
    models: [gpt-4o-mini]
    max_budget: 20
    budget_duration: monthly
  - group: llm-power
    models: [gpt-4o, claude-3-5-sonnet]
    max_budget: 200
    budget_duration: yearly
    tpm_limit: 100000
    auto_create_keys: true
policy:
  unmapped_users: deactivate
"""


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text}\033[0m", flush=True)


def syncd(folder: Path, *args: str) -> int:
    """Run one syncd command as an operator would, showing the command and what it printed."""
    print(f"$ syncd {' '.join(args)} --config {folder}/syncd.yaml", flush=True)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LDAP_BIND_PASSWORD": SYNC_PASSWORD,
        "SYNCD_LOG_LEVEL": "WARNING",
        "SYNCD_LOG_FORMAT": "text",
    }
    done = subprocess.run(
        [sys.executable, "-m", "syncd", *args, "--config", str(folder / "syncd.yaml")],
        env=env,
        text=True,
        capture_output=True,
    )
    print(done.stdout.rstrip())
    if done.stderr.strip():
        print(done.stderr.rstrip())
    print(f"(exit status {done.returncode})", flush=True)
    return done.returncode


def show_litellm(url: str) -> None:
    """The users the fake LiteLLM holds now, as a table."""
    users = httpx.get(
        f"{url}/user/list", params={"page_size": 100}, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ).json()["users"]
    print(f"{'user_id':<8} {'role':<15} {'models':<36} {'budget':>7} {'cycle':<8} {'active':<7} keys")
    for user in sorted(users, key=lambda u: u["user_id"]):
        keys = httpx.get(
            f"{url}/key/list",
            params={"user_id": user["user_id"], "return_full_object": "true"},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        ).json()["keys"]
        state = ",".join("blocked" if k.get("blocked") else "ok" for k in keys) or "-"
        active = user["metadata"].get("scim_active", True)
        print(
            f"{user['user_id']:<8} {user['user_role']:<15} {','.join(user['models']):<36} "
            f"{user['max_budget'] or '-':>7} {user['budget_duration'] or '-':<8} {active!s:<7} {state}"
        )


def change_directory(slapd: Slapd) -> None:
    """A promotion, a leaver, a locked account and a new hire, written as the directory's administrator."""
    with ldap3.Connection(ldap3.Server(slapd.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True) as conn:
        conn.modify(f"cn=llm-admins,{GROUPS}", {"member": [(ldap3.MODIFY_ADD, [f"uid=bob,{PEOPLE}"])]})
        conn.modify(f"cn=llm-users,{GROUPS}", {"member": [(ldap3.MODIFY_DELETE, [f"uid=carol,{PEOPLE}"])]})
        conn.modify(f"uid=dave,{PEOPLE}", {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["000001010000Z"])]})
        conn.add(
            f"uid=grace,{PEOPLE}",
            ["inetOrgPerson"],
            {"cn": "Grace Hopper", "sn": "Hopper", "mail": "grace@example.org"},
        )
        conn.modify(f"cn=research,{GROUPS}", {"member": [(ldap3.MODIFY_ADD, [f"uid=grace,{PEOPLE}"])]})
    print(
        "bob joined llm-admins; carol left llm-users; dave's account was locked; grace was hired into research "
        "(nested in llm-users)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_fake_litellm() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.testing.fake_litellm", "--port", str(port), "--master-key", MASTER_KEY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/health", timeout=0.2)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the fake LiteLLM did not start")


def keep_folder(folder: Path, slapd: Slapd, litellm_url: str) -> None:
    """Make the kept folder usable: the secrets in demo.env (mode 600), and `start`/`stop` for slapd and the fake."""
    env = folder / "demo.env"
    env.write_text(
        f"export LITELLM_MASTER_KEY={MASTER_KEY}\nexport LDAP_BIND_PASSWORD={SYNC_PASSWORD}\n"
        f"export SYNCD_CONFIG={folder}/syncd.yaml\n"
    )
    env.chmod(0o600)
    port = litellm_url.rsplit(":", 1)[1]
    slapd_bin = shutil.which("slapd") or "/usr/sbin/slapd"
    start = folder / "start"
    start.write_text(f"""#!/usr/bin/env bash
# Restart the demo's slapd and fake LiteLLM on the same ports with the same secrets (demo.env); ./stop stops them.
set -euo pipefail
cd "{folder}"
. ./demo.env
"{slapd_bin}" -F ldap/slapd.d -h "{slapd.url}/ {slapd.tls_url}/"
nohup "{sys.executable}" -m syncd.testing.fake_litellm --port {port} --master-key "$LITELLM_MASTER_KEY" \\
  >fake-litellm.log 2>&1 &
echo $! > fake-litellm.pid
for _ in $(seq 100); do
  "{sys.executable}" -c "import httpx; httpx.get('{litellm_url}/health', timeout=0.2)" 2>/dev/null && break
  sleep 0.1
done
echo "slapd at {slapd.url}, the FAKE LiteLLM at {litellm_url} (in memory: it starts empty; a"
echo "'syncd sync --drift-check' puts the managed users back). Then:"
echo "  . {folder}/demo.env && {Path(sys.executable).parent}/syncd plan"
""")
    stop = folder / "stop"
    stop.write_text(f"""#!/usr/bin/env bash
# Stop what ./start started.
cd "{folder}"
[ -f ldap/slapd.pid ] && kill "$(cat ldap/slapd.pid)" 2>/dev/null
[ -f fake-litellm.pid ] && kill "$(cat fake-litellm.pid)" 2>/dev/null
rm -f fake-litellm.pid
exit 0
""")
    start.chmod(0o755)
    stop.chmod(0o755)
    print(f"\nkept {folder}: the demo's secrets are in {env} (LITELLM_MASTER_KEY, LDAP_BIND_PASSWORD, SYNCD_CONFIG);")
    print(f"{start} restarts its slapd and fake LiteLLM with them, {stop} stops them.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder, with its secrets and a script to restart"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    slapd = Slapd.create(folder / "ldap")
    slapd.load(ROOT / "examples" / "directory.ldif")
    slapd.start()
    fake, url = start_fake_litellm()
    try:
        (folder / "syncd.yaml").write_text(config(folder, slapd, url))
        banner(
            f"A throwaway directory at {slapd.url} (examples/directory.ldif), the FAKE LiteLLM stand-in at {url}, "
            f"SQLite in {folder}"
        )
        syncd(folder, "db", "upgrade")
        syncd(folder, "check-config")
        banner("What would change (nothing is written by plan)")
        syncd(folder, "plan")
        banner("First sync")
        syncd(folder, "sync")
        show_litellm(url)
        banner("The directory changes")
        change_directory(slapd)
        banner(
            "Next sync: two deactivations out of five active users trip the guard (policy.max_deactivation_ratio): "
            "they wait as held plan 1, the rest applies"
        )
        syncd(folder, "sync")
        banner("The operator checks the held plan above and approves it (or: syncd sync --allow-mass-deactivation)")
        syncd(folder, "approve", "1", "--note", "demo: both leavers confirmed")
        show_litellm(url)
        banner("And once more: nothing left to do")
        syncd(folder, "sync")
        banner("Why does grace get exactly this? (her groups, the nesting path, where each value came from)")
        syncd(folder, "explain", "grace")
    finally:
        fake.terminate()
        slapd.stop()
        if args.keep:
            keep_folder(folder, slapd, url)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
