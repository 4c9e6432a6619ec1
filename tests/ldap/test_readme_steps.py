"""README's "Pointing syncd at a real LiteLLM" steps, run as written: the shell block is read from README.md and run
by bash with the variables the README documents, against the fake LiteLLM and a throwaway slapd holding
examples/directory.ldif, from a folder holding a copy of config/.

An `export NAME=placeholder` line gets this test's value for NAME (the fake's master key, the directory's bind
password); every other line runs as it stands. LITELLM_URL and LDAP_URL, documented as optional, point the example
config at the fake and the slapd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _slapd import SYNC_PASSWORD, Slapd

from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

ROOT = Path(__file__).resolve().parents[2]
MASTER = "sk-readme-master-3e1f"
_EXPORT = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(\S+)")


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def shell_block(section: str) -> list[str]:
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for line in block.splitlines() if line.strip()]


def documented_variables(section: str) -> set[str]:
    """The variables of the section's table (first column, in backquotes)."""
    return set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \|", section, re.M))


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Slapd]:
    """A throwaway slapd with examples/directory.ldif, the directory the example config describes."""
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        pytest.skip("Debian's slapd is not installed")
    server = Slapd.create(tmp_path / "ldap")
    server.load(ROOT / "examples" / "directory.ldif")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def litellm() -> Iterator[tuple[str, FakeLiteLLM]]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        yield url, app.state.fake


def test_the_readme_deployment_steps_run_as_written(
    tmp_path: Path, directory: Slapd, litellm: tuple[str, FakeLiteLLM]
) -> None:
    section = readme_section("Pointing syncd at a real LiteLLM")
    lines = shell_block(section)
    documented = documented_variables(section)
    ours = {"LITELLM_MASTER_KEY": MASTER, "LDAP_BIND_PASSWORD": SYNC_PASSWORD}
    exported = {m.group(1) for line in lines if (m := _EXPORT.match(line))}
    assert exported <= documented, f"exported but not in the README's table: {exported - documented}"
    example = (ROOT / "config" / "syncd.example.yaml").read_text().splitlines()
    values = "\n".join(line.split(" #")[0] for line in example if not line.lstrip().startswith("#"))
    read = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(?::-[^}]*)?\}", values))
    assert read and read <= documented, (
        f"the example config reads variables the README does not list: {read - documented}"
    )
    script = ["set -euo pipefail"]
    for line in lines:
        match = _EXPORT.match(line)
        script.append(f"export {match.group(1)}='{ours[match.group(1)]}'" if match and match.group(1) in ours else line)

    work = tmp_path / "work"
    shutil.copytree(ROOT / "config", work / "config")
    url, fake = litellm
    venv_bin = Path(sys.executable).parent  # where `. .venv/bin/activate` puts syncd on PATH
    env = {
        "PATH": f"{venv_bin}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LITELLM_URL": url,
        "LDAP_URL": directory.url,
        "SYNCD_LOG_FORMAT": "text",
    }
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)], capture_output=True, text=True, env=env, cwd=work, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database schema: empty -> " in done.stdout and "config OK" in done.stdout
    assert "ok    ldap corp:" in done.stdout and "bind ok" in done.stdout
    assert "Traceback" not in done.stderr and MASTER not in done.stdout + done.stderr
    # the example's mappings, applied to the example directory: llm-admins (nested in llm-users) are admins
    assert fake.users and fake.users["alice"]["user_role"] == "proxy_admin"
    assert {u["user_role"] for u in fake.users.values()} <= {"proxy_admin", "internal_user"}
    assert (work / "syncd.yaml").exists() and (work / "syncd.db").exists()
