"""Bearer tokens: which source a request speaks for.

A static token (one per identity provider, `scim.tokens`) is hashed with SHA-256 and compared with every configured
digest in constant time (a token given in clear is hashed when the settings are read), so neither the token nor its
length shows in the timing. A token that matches none and has the shape of a JWT is checked as an OAuth access token
(syncd.scim.oauth) when OAuth is on. Tokens never appear in a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from syncd.scim.errors import unauthorized
from syncd.scim.oauth import AccessTokens
from syncd.settings.scim import ScimToken

__all__ = ["TokenRing"]


class TokenRing:
    """The configured static tokens, kept as SHA-256 digests only, and the OAuth access tokens when OAuth is on."""

    def __init__(self, tokens: Iterable[ScimToken], oauth: AccessTokens | None = None) -> None:
        self._oauth = oauth
        self._digests: list[tuple[bytes, str]] = []
        for token in tokens:
            if token.token is not None:
                digest = hashlib.sha256(token.token.get_secret_value().encode("utf-8")).digest()
            else:
                digest = bytes.fromhex(token.token_sha256 or "")
            self._digests.append((digest, token.name))

    def source(self, authorization: str | None) -> str:
        """The source name of a valid `Authorization: Bearer` header; UnauthorizedException (with a reason) else."""
        if not authorization:
            raise unauthorized("missing", "an Authorization: Bearer header is required")
        scheme, _, presented = authorization.strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise unauthorized("malformed", "the Authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found = None
        for known, name in self._digests:
            if hmac.compare_digest(digest, known):
                found = name
        if found is None and self._oauth is not None and self._oauth.looks_like_one(presented):
            return self._oauth.source(presented)
        if found is None:
            raise unauthorized("invalid", "the bearer token is not valid")
        return found
