"""Bearer tokens, one per identity provider: which source a request speaks for.

Each presented token is hashed with SHA-256 and compared with every configured digest in constant time (a token
given in clear is hashed when the settings are read), so neither the token nor its length shows in the timing.
Tokens never appear in a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from scim2_models import UnauthorizedException

from syncd.settings.scim import ScimToken

__all__ = ["TokenRing"]


class TokenRing:
    """The configured tokens, kept as SHA-256 digests only."""

    def __init__(self, tokens: Iterable[ScimToken]) -> None:
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
            raise _refused("missing", "an Authorization: Bearer header is required")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise _refused("malformed", "the Authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(presented.strip().encode("utf-8")).digest()
        found = None
        for known, name in self._digests:
            if hmac.compare_digest(digest, known):
                found = name
        if found is None:
            raise _refused("invalid", "the bearer token is not valid")
        return found


def _refused(reason: str, detail: str) -> UnauthorizedException:
    error = UnauthorizedException(detail=detail)
    error.context["reason"] = reason
    return error
