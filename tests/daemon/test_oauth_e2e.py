"""OAuth 2.0 client credentials for SCIM end to end (issue 17): real `syncd serve` processes and the fake LiteLLM.

The secrets' hashes come from `syncd hash-secret`; tokens from each process's POST /oauth/token. A token's writes
reach LiteLLM under its client's source; the client's tokens stop working when they expire, when the secret they
were issued for is rotated out, when the client is rebound to another source or removed; a token signed by another
deployment or for another audience is refused; a second provider holding an OAuth client cannot touch another
source's person. Restarts keep the same database (the configuration is read at start).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from _daemon import GROUP_SCHEMA, PATCH_SCHEMA, SCIM_TOKEN, USER_SCHEMA, base_config, oauth_token, wait_for

SIGNING_KEY = "oauth-e2e-signing-key-0123456789abcdef0123456789"
OLD, NEW = "entra-e2e-secret-old-0123456789abcdef01", "entra-e2e-secret-new-0123456789abcdef01"


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    """Each secret's hash, as `syncd hash-secret` prints it."""
    found = {}
    for secret in (OLD, NEW):
        done = subprocess.run(
            [sys.executable, "-m", "syncd", "hash-secret"], input=secret, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and secret not in done.stdout, done.stderr
        found[secret] = done.stdout.strip()
    return found


def _config(tmp_path: Path, fake: Any, secret_hashes: list[str], **oauth: Any) -> dict[str, Any]:
    config = base_config(f"sqlite:///{tmp_path}/syncd.db", fake.url)
    config["scim"]["oauth"] = {"signing_key": SIGNING_KEY, **oauth}
    clients = [{"client_id": "entra-app", "source": "entra", "secret_hashes": secret_hashes}]
    config["scim"]["oauth_clients"] = clients
    config["mappings"] = [{"group": "engineers", "role": "internal_user", "models": ["gpt-4o"]}]
    return _named(config)


def _named(config: dict[str, Any]) -> dict[str, Any]:
    """The mapping names every SCIM source of `config` (with two tenants a mapping by name must say which it means)."""
    sources = [t["name"] for t in config["scim"]["tokens"]]
    sources += sorted({c["source"] for c in config["scim"]["oauth_clients"]} - set(sources))
    for mapping in config["mappings"]:
        mapping["sources"] = sources
    return config


def _token(syncd: Any, secret: str, *, basic: bool = True) -> httpx.Response:
    return oauth_token(syncd, "entra-app", secret, basic=basic)


def _access(syncd: Any, secret: str, **kwargs: Any) -> str:
    answer = _token(syncd, secret, **kwargs)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _scim(syncd: Any, token: str, method: str, path: str, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    return httpx.request(method, f"{syncd.url}/scim/v2{path}", json=body, headers=headers, timeout=10)


def _engineer(syncd: Any, token: str, name: str, email: str | None = None, *, active: bool = True) -> str:
    """A user in the group `engineers` of the token's source; the user's SCIM id."""
    email = email or f"{name}@example.org"
    body = {"schemas": [USER_SCHEMA], "userName": name, "active": active, "emails": [{"value": email}]}
    user = _scim(syncd, token, "POST", "/Users", body)
    assert user.status_code == 201, user.text
    found = _scim(syncd, token, "GET", '/Groups?filter=displayName eq "engineers"').json()
    if found["totalResults"]:
        group = found["Resources"][0]["id"]
    else:
        group = _scim(syncd, token, "POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "engineers"}).json()
        group = group["id"]
    add = {"op": "add", "path": "members", "value": [{"value": user.json()["id"]}]}
    patched = _scim(syncd, token, "PATCH", f"/Groups/{group}", {"schemas": [PATCH_SCHEMA], "Operations": [add]})
    assert patched.status_code in (200, 204), patched.text
    return str(user.json()["id"])


def _restart(syncd: Any, launch: Any, config: dict[str, Any]) -> Any:
    assert syncd.stop() == 0
    config["server"]["port"] = syncd.port
    started = launch(_named(config))
    started.wait_healthy()
    return started


def _runs(syncd: Any) -> int:
    return sum(1 for event in syncd.log_events() if event["msg"] == "run finished")


def _secrets_absent(*processes: Any, tokens: list[str]) -> None:
    for process in processes:
        text = process.logs()
        for secret in (OLD, NEW, SIGNING_KEY, SCIM_TOKEN, *tokens):
            assert secret not in text


def test_an_oauth_client_provisions_its_source_and_its_tokens_end_as_the_config_says(
    tmp_path: Path, fake: Any, launch: Any, hashes: dict[str, str]
) -> None:
    config = _config(tmp_path, fake, [hashes[OLD]])
    first = launch(config, args=("--migrate",))
    first.wait_healthy()

    # a token by HTTP Basic; its writes reach LiteLLM as the source entra
    token = _access(first, OLD)
    schemes = _scim(first, token, "GET", "/ServiceProviderConfig").json()["authenticationSchemes"]
    assert any(s["name"] == "OAuth 2.0 client credentials" for s in schemes)
    ada = _engineer(first, token, "ada")
    wait_for(lambda: "ada" in fake.users(), 15, "the OAuth client's user in LiteLLM")
    assert fake.users()["ada"]["metadata"]["syncd"]["source"] == "entra"
    assert first.metric("syncd_oauth_token_requests_total", outcome="issued") == 1

    # the static token of okta and the entra token see only their own source's people
    okta_id = _engineer(first, SCIM_TOKEN, "grace")
    assert _scim(first, token, "GET", f"/Users/{okta_id}").status_code == 404
    assert _scim(first, SCIM_TOKEN, "GET", f"/Users/{ada}").status_code == 404
    # a token signed by another deployment, or for another audience, is refused
    claims = jwt.decode(token, SIGNING_KEY, algorithms=["HS256"], audience="syncd-scim")
    other_key = jwt.encode(claims, "another-deployments-key-0123456789abcdef", headers={"typ": "at+jwt"})
    other_audience = jwt.encode({**claims, "aud": "another-syncd"}, SIGNING_KEY, headers={"typ": "at+jwt"})
    for refused in (other_key, other_audience):
        answer = _scim(first, refused, "GET", "/Users")
        assert answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]

    # rotation: both secrets listed, both get tokens by the form too, both tokens work
    config = _config(tmp_path, fake, [hashes[OLD], hashes[NEW]])
    second = _restart(first, launch, config)
    assert _scim(second, token, "GET", f"/Users/{ada}").status_code == 200  # tokens outlive a restart
    with_old, with_new = _access(second, OLD, basic=False), _access(second, NEW, basic=False)
    assert _scim(second, with_old, "GET", "/Users").status_code == 200
    assert _scim(second, with_new, "GET", "/Users").status_code == 200

    # the old secret removed: refused at /oauth/token, and the tokens it got end with it
    config = _config(tmp_path, fake, [hashes[NEW]])
    third = _restart(second, launch, config)
    refused = _token(third, OLD)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert _scim(third, with_old, "GET", "/Users").status_code == 401
    assert _scim(third, with_new, "GET", f"/Users/{ada}").status_code == 200
    assert third.metric("syncd_scim_auth_failures_total", reason="revoked") == 1

    # the client rebound to another source: its entra tokens are refused; it now writes as okta
    config["scim"]["oauth_clients"][0]["source"] = "okta"
    fourth = _restart(third, launch, config)
    assert _scim(fourth, with_new, "GET", "/Users").status_code == 401
    as_okta = _access(fourth, NEW)
    assert _scim(fourth, as_okta, "GET", f"/Users/{okta_id}").status_code == 200
    assert _scim(fourth, as_okta, "GET", f"/Users/{ada}").status_code == 404

    # the client removed (another stays): its tokens are refused, it gets no new one
    config["scim"]["oauth_clients"] = [{"client_id": "other-app", "source": "other", "secret_hashes": [hashes[OLD]]}]
    fifth = _restart(fourth, launch, config)
    assert _scim(fifth, as_okta, "GET", "/Users").status_code == 401
    assert _token(fifth, NEW).status_code == 401
    assert _scim(fifth, SCIM_TOKEN, "GET", f"/Users/{okta_id}").status_code == 200
    assert fake.users()["ada"]["metadata"].get("scim_active") is not False  # removing a client deactivates nobody
    _secrets_absent(first, second, third, fourth, fifth, tokens=[token, with_old, with_new, as_okta])


def test_an_access_token_expires_after_its_lifetime(
    tmp_path: Path, fake: Any, launch: Any, hashes: dict[str, str]
) -> None:
    syncd = launch(_config(tmp_path, fake, [hashes[NEW]], token_lifetime="2s"), args=("--migrate",))
    syncd.wait_healthy()
    answer = _token(syncd, NEW)
    assert answer.status_code == 200 and answer.json()["expires_in"] == 2
    token = answer.json()["access_token"]
    assert _scim(syncd, token, "GET", "/Users").status_code == 200
    time.sleep(3)
    expired = _scim(syncd, token, "GET", "/Users")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"], expired.text
    assert syncd.metric("syncd_scim_auth_failures_total", reason="expired") == 1
    assert _scim(syncd, _access(syncd, NEW), "GET", "/Users").status_code == 200  # a new token works
    _secrets_absent(syncd, tokens=[token])


def test_an_oauth_tenant_cannot_suspend_another_sources_person(
    tmp_path: Path, fake: Any, launch: Any, hashes: dict[str, str]
) -> None:
    syncd = launch(_config(tmp_path, fake, [hashes[NEW]]), args=("--migrate",))
    syncd.wait_healthy()
    _engineer(syncd, SCIM_TOKEN, "alice")
    wait_for(lambda: "alice" in fake.users(), 15, "okta's alice in LiteLLM")

    token = _access(syncd, NEW)
    runs = _runs(syncd)
    _engineer(syncd, token, "alice", "mallory@evil.example.com", active=False)  # okta's user_id, disabled
    _engineer(syncd, token, "mallory", "alice@example.org", active=False)  # okta's email, disabled
    wait_for(lambda: _runs(syncd) > runs, 15, "a reconcile after the OAuth tenant's writes")
    users = fake.users()
    assert users["alice"]["metadata"].get("scim_active") is not False and "mallory" not in users
    assert users["alice"]["metadata"]["syncd"]["source"] == "okta"
