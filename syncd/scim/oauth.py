"""OAuth 2.0 client credentials for SCIM (RFC 6749 §4.4): who may get an access token, and what a token says.

`ClientRegistry` checks a client's id and secret against the scrypt hashes of `scim.oauth_clients` (always two scrypt
checks, a decoy hash standing in for a missing one, so the timing tells neither which ids exist nor how many secrets
a client has), then
signs an access token: a JWT (RFC 9068 profile, HS256, through PyJWT) with `iss`, `aud`, `sub` (the client_id),
`src` (its source), `sh` (which of its secret hashes was used), `iat`, `exp` and a random `jti`.

`AccessTokens.source(token)` answers which source a presented token speaks for. It refuses a token that is expired,
signed with another key or algorithm, for another audience or issuer, of a client no longer in the config, for a
source other than its client's, or issued with a secret whose hash is no longer listed (so removing a leaked secret
also ends the tokens it got). The configuration is read at start: a removed client is refused once syncd restarts
with the new file. Neither secrets nor tokens are ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from syncd.scim.errors import unauthorized
from syncd.secret_hash import SecretHash, hash_secret, parse_secret_hash
from syncd.settings.scim import OAuthClient, ScimSettings

__all__ = ["AccessTokens", "ClientRegistry", "IssuedToken"]

_ALGORITHM = "HS256"
_TYPE = "at+jwt"
_REQUIRED = ["exp", "iat", "aud", "iss", "sub", "src", "sh"]
#: successful secret checks remembered (by keyed digest, never the secret) so that a client's next request is cheap
_REMEMBERED = 256
#: the most secret hashes a client has (two while rotating)
_MAX_HASHES = 2


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token and its lifetime in seconds."""

    access_token: str
    expires_in: int
    client_id: str


@dataclass(frozen=True, slots=True)
class _Client:
    config: OAuthClient
    hashes: tuple[SecretHash, ...]


def _signing_key(settings: ScimSettings) -> bytes:
    key = settings.oauth.signing_key
    if key is None or settings.oauth.key_problem() is not None:
        raise ValueError("scim.oauth.signing_key is not usable: OAuth is off")
    return key.get_secret_value().encode("utf-8")


def _clients(settings: ScimSettings) -> dict[str, _Client]:
    return {
        c.client_id: _Client(c, tuple(parse_secret_hash(h) for h in c.secret_hashes)) for c in settings.oauth_clients
    }


class ClientRegistry:
    """The configured OAuth clients: authenticates them and issues their access tokens."""

    def __init__(self, settings: ScimSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._key = _signing_key(settings)
        self._clients = _clients(settings)
        self._lifetime = int(settings.oauth.token_lifetime)
        self._audience, self._issuer = settings.oauth.audience, settings.oauth.issuer
        self._clock = clock
        # a client_id nobody has still costs one scrypt, with the parameters the real hashes use
        self._decoy = parse_secret_hash(hash_secret(os.urandom(16).hex()))
        self._pepper = os.urandom(32)
        self._remembered: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def authenticate(self, client_id: str, secret: str) -> tuple[OAuthClient, str] | None:
        """(The client, the fingerprint of the hash its secret matched), or None. Blocking: scrypt, ~0.1 s a hash."""
        client = self._clients.get(client_id)
        remembered = self._remembered_key(client_id, secret)
        if client is not None:
            with self._lock:
                fingerprint = self._remembered.get(remembered)
            if fingerprint is not None and fingerprint in {h.fingerprint for h in client.hashes}:
                return client.config, fingerprint
        # always _MAX_HASHES checks (the decoy filling in), so the time taken says nothing about the client_id
        known = client.hashes if client is not None else ()
        matched = None
        for candidate in (*known, *(self._decoy,) * (_MAX_HASHES - len(known))):
            if candidate.matches(secret) and candidate is not self._decoy:
                matched = candidate.fingerprint
        if client is None or matched is None:
            return None
        with self._lock:
            if len(self._remembered) >= _REMEMBERED:
                self._remembered.clear()
            self._remembered[remembered] = matched
        return client.config, matched

    def _remembered_key(self, client_id: str, secret: str) -> bytes:
        return hmac.new(self._pepper, f"{client_id}\x00{secret}".encode(), hashlib.sha256).digest()

    def issue(self, client: OAuthClient, fingerprint: str) -> IssuedToken:
        """A signed access token for `client`, valid for the configured lifetime."""
        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": client.client_id,
            "src": client.source,
            "sh": fingerprint,
            "iat": now,
            "exp": now + self._lifetime,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM, headers={"typ": _TYPE})
        return IssuedToken(token, self._lifetime, client.client_id)


class AccessTokens:
    """Checks the access tokens ClientRegistry issued, against the current configuration."""

    def __init__(self, settings: ScimSettings) -> None:
        self._key = _signing_key(settings)
        self._clients = _clients(settings)
        self._audience, self._issuer = settings.oauth.audience, settings.oauth.issuer

    @staticmethod
    def looks_like_one(presented: str) -> bool:
        """A JWT has three dot-separated parts (a static token from `openssl rand -hex 32` has none)."""
        return presented.count(".") == 2

    def source(self, presented: str) -> str:
        """The source `presented` speaks for; UnauthorizedException with a reason (expired, invalid, revoked) else."""
        try:
            if jwt.get_unverified_header(presented).get("typ") != _TYPE:
                raise unauthorized("invalid", "the bearer token is not valid")
            claims = jwt.decode(
                presented,
                self._key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("expired", "the access token has expired: get a new one from /oauth/token") from None
        except jwt.PyJWTError:
            raise unauthorized("invalid", "the bearer token is not valid") from None
        client = self._clients.get(str(claims["sub"]))
        if client is None or client.config.source != claims["src"]:
            raise unauthorized("revoked", "the access token's client is no longer configured for this source")
        if claims["sh"] not in {h.fingerprint for h in client.hashes}:
            raise unauthorized("revoked", "the access token was issued for a client secret that has been removed")
        return client.config.source
