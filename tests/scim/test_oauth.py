"""OAuth 2.0 client credentials for SCIM (issue 17), in-process: the token endpoint's RFC 6749 answers, the tokens it
signs and every reason one is refused, the settings and `syncd hash-secret`. tests/daemon/test_oauth_e2e.py drives
the same flow through real `syncd serve` processes."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest
from fastapi.testclient import TestClient

from syncd.app import create_app
from syncd.checks import run_checks
from syncd.metrics import Metrics
from syncd.secret_hash import hash_secret, parse_secret_hash
from syncd.settings import ConfigError, Settings, settings_from_dict
from syncd.store import make_engine, upgrade
from syncd.store.repository import SyncStore

from .oauth import OAUTH_KEY, SECRETS, oauth_section, secret_hash

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
STATIC = "okta-static-token-0123456789abcdef0123"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _settings(tmp_path: Path, **oauth: Any) -> Settings:
    scim = {"enabled": True, "tokens": [{"name": "okta", "token": STATIC}], **oauth_section(**oauth)}
    return settings_from_dict({"database": {"url": f"sqlite:///{tmp_path}/oauth.db"}, "scim": scim})


class _App:
    """create_app over one SQLite file; `restart` builds it again from other settings, over the same database."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.engine = make_engine(f"sqlite:///{tmp_path}/oauth.db")
        upgrade(self.engine)
        self.client: TestClient | None = None
        self.metrics = Metrics()

    def start(self, **oauth: Any) -> TestClient:
        self.metrics = Metrics()
        settings = _settings(self.tmp_path, **oauth)
        app = create_app(settings, store=SyncStore(self.engine), engine=self.engine, metrics=self.metrics)
        self.client = TestClient(app)
        return self.client

    def token(self, client_id: str = "entra-app", secret: str = SECRETS[0]) -> str:
        assert self.client is not None
        answer = self.client.post("/oauth/token", data=_form(client_id, secret))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def scim(self, method: str, path: str, token: str, body: Any = None) -> Any:
        assert self.client is not None
        headers = {"Authorization": f"Bearer {token}"}
        return self.client.request(method, f"/scim/v2{path}", json=body, headers=headers)


def _form(client_id: str, secret: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, **extra}


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_App]:
    app = _App(tmp_path)
    app.start()
    yield app
    app.engine.dispose()


def test_a_client_gets_a_short_lived_token_by_form_or_basic_and_it_speaks_for_its_source(served: _App) -> None:
    client = served.client
    assert client is not None
    answer = client.post("/oauth/token", data=_form("entra-app", SECRETS[0], scope="anything"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert answer.headers["cache-control"] == "no-store" and answer.headers["pragma"] == "no-cache"
    claims = jwt.decode(body["access_token"], OAUTH_KEY, algorithms=["HS256"], audience="syncd-scim")
    assert claims["sub"] == "entra-app" and claims["src"] == "entra" and claims["iss"] == "syncd"
    assert claims["exp"] - claims["iat"] == 3600 and abs(claims["iat"] - time.time()) < 10
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"

    basic = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=_basic("entra-app", SECRETS[0])
    )
    assert basic.status_code == 200, basic.text

    created = served.scim("POST", "/Users", body["access_token"], {"schemas": [USER], "userName": "ada@example.org"})
    assert created.status_code == 201, created.text
    # the user belongs to entra: the okta token does not see it, the entra token does
    assert served.scim("GET", f"/Users/{created.json()['id']}", STATIC).status_code == 404
    assert served.scim("GET", f"/Users/{created.json()['id']}", basic.json()["access_token"]).status_code == 200
    assert served.metrics.oauth_token_requests.labels(outcome="issued")._value.get() == 2


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        ({"grant_type": "password", "username": "x", "password": "y"}, {}, 400, "unsupported_grant_type"),
        ({"client_id": "entra-app", "client_secret": SECRETS[0]}, {}, 400, "invalid_request"),
        ("grant_type=client_credentials&grant_type=client_credentials", FORM, 400, "invalid_request"),
        ("grant_type=client_credentials&client_id=%FF&client_secret=x", FORM, 400, "invalid_request"),
        ("grant_type=client_credentials&client_id=a%00&client_secret=x", FORM, 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, {}, 401, "invalid_client"),
        (_form("entra-app", "not-the-secret-0123456789abcdef0123"), {}, 401, "invalid_client"),
        (_form("nobody", SECRETS[0]), {}, 401, "invalid_client"),
        (_form("entra-app", SECRETS[0]), _basic("entra-app", SECRETS[0]), 400, "invalid_request"),
        ({"grant_type": "client_credentials", "client_id": "other"}, _basic("entra-app", SECRETS[0]), 400, None),
        ({"grant_type": "client_credentials"}, {"Authorization": "Basic !!!"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, {"Authorization": f"Bearer {STATIC}"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, _basic("entra-app", "wrong-secret-0123456789abcdef"), 401, None),
    ],
)
def test_the_token_endpoint_answers_rfc_6749_errors(
    served: _App, data: Any, headers: dict[str, str], status: int, error: str | None
) -> None:
    client = served.client
    assert client is not None
    if isinstance(data, str):
        answer = client.post("/oauth/token", content=data.encode(), headers=headers)
    else:
        answer = client.post("/oauth/token", data=data, headers=headers)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == (error or ("invalid_client" if status == 401 else "invalid_request"))
    assert body["error_description"] and answer.headers["cache-control"] == "no-store"
    assert "access_token" not in body and SECRETS[0] not in answer.text
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Basic realm=")


def test_the_token_endpoint_takes_only_small_form_posts(served: _App) -> None:
    client = served.client
    assert client is not None
    json_body = client.post("/oauth/token", json=_form("entra-app", SECRETS[0]))
    assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"
    large = client.post("/oauth/token", content=b"grant_type=" + b"x" * 5000, headers=FORM)
    assert large.status_code == 413 and large.json()["error"] == "invalid_request"
    got = client.get("/oauth/token")
    assert got.status_code == 405 and got.json()["error"] == "invalid_request" and got.headers["allow"] == "POST"


def test_tokens_are_refused_when_expired_forged_or_for_another_audience(served: _App) -> None:
    good = jwt.decode(served.token(), OAUTH_KEY, algorithms=["HS256"], audience="syncd-scim")
    now = int(time.time())

    def forged(key: str = OAUTH_KEY, algorithm: str = "HS256", typ: str = "at+jwt", **claims: Any) -> str:
        return jwt.encode({**good, **claims}, key, algorithm=algorithm, headers={"typ": typ})

    assert served.scim("GET", "/Users", forged()).status_code == 200  # the forgery helper itself makes good tokens
    refused = {
        "expired": forged(iat=now - 7200, exp=now - 3600),
        "wrong audience": forged(aud="another-deployment"),
        "wrong issuer": forged(iss="someone-else"),
        "another key": forged(key="another-signing-key-0123456789abcdef0123"),
        "another type": forged(typ="JWT"),
        "no expiry": jwt.encode({k: v for k, v in good.items() if k != "exp"}, OAUTH_KEY, headers={"typ": "at+jwt"}),
        "another source": forged(src="okta"),
        "an unknown client": forged(sub="nobody"),
        "a secret never listed": forged(sh="0123456789abcdef"),
    }
    refused["alg none"] = jwt.encode({**good}, None, algorithm="none", headers={"typ": "at+jwt"})
    for why, token in refused.items():
        answer = served.scim("GET", "/Users", token)
        assert answer.status_code == 401, (why, answer.text)
        assert answer.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"], why
        assert 'error="invalid_token"' in answer.headers["www-authenticate"], why
    failures = served.metrics.scim_auth_failures
    assert failures.labels(reason="expired")._value.get() == 1
    assert failures.labels(reason="revoked")._value.get() == 3
    assert failures.labels(reason="invalid")._value.get() == len(refused) - 4


def test_a_removed_client_and_a_removed_secret_are_refused_at_once(served: _App) -> None:
    old, new = SECRETS
    served.start(hashes=[secret_hash(old), secret_hash(new)])  # rotation: both secrets work
    with_old, with_new = served.token(secret=old), served.token(secret=new)
    assert served.scim("GET", "/Users", with_old).status_code == 200
    assert served.scim("GET", "/Users", with_new).status_code == 200

    served.start(hashes=[secret_hash(new)])  # the old secret removed: it gets no token, and its tokens end
    assert served.client is not None
    assert served.client.post("/oauth/token", data=_form("entra-app", old)).status_code == 401
    assert served.scim("GET", "/Users", with_old).status_code == 401
    assert served.scim("GET", "/Users", with_new).status_code == 200

    served.start(source="okta")  # the client now speaks for okta: its entra tokens end
    assert served.scim("GET", "/Users", with_new).status_code == 401

    served.start(clients=[])  # the client removed: its tokens are refused, the static token still works
    assert served.scim("GET", "/Users", with_new).status_code == 401
    assert served.scim("GET", "/Users", STATIC).status_code == 200


def test_a_token_lives_for_the_configured_lifetime(served: _App) -> None:
    served.start(token_lifetime="1s")
    token = served.token()
    assert served.scim("GET", "/Users", token).status_code == 200
    time.sleep(2.1)
    expired = served.scim("GET", "/Users", token)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_service_provider_config_advertises_oauth_only_when_it_is_on(served: _App) -> None:
    schemes = served.scim("GET", "/ServiceProviderConfig", STATIC).json()["authenticationSchemes"]
    assert [s["type"] for s in schemes] == ["oauthbearertoken", "oauthbearertoken"]
    assert "client credentials" in schemes[1]["name"] and schemes[1]["specUri"].endswith("section-4.4")
    served.start(signing_key="")
    schemes = served.scim("GET", "/ServiceProviderConfig", STATIC).json()["authenticationSchemes"]
    assert [s["name"] for s in schemes] == ["Bearer token"]
    assert (
        served.client is not None
        and served.client.post("/oauth/token", data=_form("entra-app", SECRETS[0])).status_code == 404
    )


@pytest.mark.parametrize("key", ["", "change-me", "secret"])
def test_an_empty_or_example_signing_key_turns_oauth_off_and_check_config_names_it(tmp_path: Path, key: str) -> None:
    settings = _settings(tmp_path, signing_key=key)
    assert not settings.scim.oauth_active
    warned = [r for r in run_checks(settings) if r.what == "scim.oauth.signing_key"]
    assert len(warned) == 1 and warned[0].warning and "OAuth is off" in warned[0].detail
    assert "entra-app (entra)" in warned[0].detail


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"signing_key": "too-short-key"}, "scim.oauth: signing_key is shorter than 32 bytes"),
        ({"hashes": ["$scrypt$nonsense"]}, "secret_hashes[0] is not a hash made by `syncd hash-secret`"),
        ({"hashes": [secret_hash(SECRETS[0])] * 3}, "secret_hashes: List should have at most 2 items"),
        ({"hashes": []}, "secret_hashes: List should have at least 1 item"),
        ({"source": "corp"}, "source names must be unique; repeated: corp"),
        ({"priority": 5, "source": "okta"}, "oauth_clients[0].priority (5) differs from source okta's (0)"),
        ({"duplicate": True}, "client_id repeated: entra-app"),
        ({"token_lifetime": "2d"}, "scim.oauth.token_lifetime"),
    ],
)
def test_bad_oauth_settings_are_config_errors_naming_the_key(
    tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    scim = {"enabled": True, "tokens": [{"name": "okta", "token": STATIC}], **oauth_section(**change)}
    ldap = [{"name": "corp", "url": "ldap://127.0.0.1:9", "bind_dn": "cn=x", "bind_password": "p" * 20}]
    ldap[0]["users"] = {"base_dn": "ou=people,dc=example,dc=org"}
    ldap[0]["groups"] = {"base_dn": "ou=groups,dc=example,dc=org"}
    raw = {"scim": scim, "ldap": ldap, "mappings": [{"group": "g", "sources": ["entra"]}]}
    if change.get("source") == "corp":
        raw["mappings"] = []
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw)
    assert problem in str(caught.value)
    assert OAUTH_KEY not in str(caught.value)


def test_an_oauth_source_is_a_source_like_a_token(tmp_path: Path) -> None:
    raw = {"scim": {"enabled": True, **oauth_section(priority=7)}, "mappings": [{"group": "g", "sources": ["entra"]}]}
    settings = settings_from_dict(raw)
    assert settings.scim.source_names == ["entra"] and settings.source_priorities == {"entra": 7}


def test_hash_secret_prints_a_hash_that_matches_only_its_secret() -> None:
    command = [sys.executable, "-m", "syncd", "hash-secret"]
    done = subprocess.run(command, input=SECRETS[0] + "\n", capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    assert SECRETS[0] not in done.stdout + done.stderr
    parsed = parse_secret_hash(printed)
    assert parsed.matches(SECRETS[0]) and not parsed.matches(SECRETS[1]) and not parsed.matches(SECRETS[0] + " ")
    assert printed != hash_secret(SECRETS[0])  # salted
    empty = subprocess.run(command, input="\n", capture_output=True, text=True, timeout=60, check=False)
    assert empty.returncode == 2 and "empty" in empty.stderr and not empty.stdout


def test_a_flood_of_token_requests_is_answered_at_once_beyond_the_queue(tmp_path: Path) -> None:
    """Two secret checks run at a time and 32 requests may be checked or wait for a check; the rest answer 503 at
    once, and the endpoint serves a good client again as soon as the flood has passed."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from syncd.testing import serve_in_thread

    settings = _settings(tmp_path)
    engine = make_engine(settings.database.url)
    upgrade(engine)
    app = create_app(settings, store=SyncStore(engine), engine=engine, metrics=Metrics())
    with serve_in_thread(app) as base, ThreadPoolExecutor(48) as pool:

        def attempt(i: int) -> httpx.Response:
            return httpx.post(f"{base}/oauth/token", data=_form(f"guess-{i}", f"wrong-{i}"), timeout=120)

        answers = list(pool.map(attempt, range(48)))
        statuses = sorted(answer.status_code for answer in answers)
        assert set(statuses) == {401, 503} and statuses.count(401) >= 32, statuses
        busy = next(answer for answer in answers if answer.status_code == 503)
        assert busy.json()["error"] == "temporarily_unavailable" and busy.headers["retry-after"] == "1"
        good = httpx.post(f"{base}/oauth/token", data=_form("entra-app", SECRETS[0]), timeout=60)
        assert good.status_code == 200, good.text
    engine.dispose()
