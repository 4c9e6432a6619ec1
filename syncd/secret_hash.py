"""Hashes of client secrets kept in the config (`scim.oauth_clients[].secret_hashes`), made by `syncd hash-secret`.

The format is the PHC string of scrypt (RFC 7914), as passlib writes it: `$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, salt
and hash in unpadded standard base64. scrypt is in Python's standard library and is memory-hard; ln=15 (N = 32768,
32 MiB, about 0.1 s on one core) is plenty for the long random secrets identity providers are given, and bounded
(ln at most 20, r at most 16, p at most 4) so that a typo in the config cannot make each token request cost minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

__all__ = ["SecretHash", "hash_secret", "parse_secret_hash"]

_FORMAT = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d)\$([A-Za-z0-9+/]{16,88})\$([A-Za-z0-9+/]{43,88})$")
_LN, _R, _P = 15, 8, 1
_SALT_BYTES, _HASH_BYTES = 16, 32


@dataclass(frozen=True, slots=True)
class SecretHash:
    """One parsed scrypt hash: its cost parameters, salt and digest."""

    ln: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, secret: str) -> bool:
        """True when `secret` hashes to this digest (compared in constant time)."""
        computed = _scrypt(secret.encode("utf-8"), self.salt, self.ln, self.r, self.p, len(self.digest))
        return hmac.compare_digest(computed, self.digest)

    @property
    def fingerprint(self) -> str:
        """A short public name of this hash (not of the secret): which secret a token was issued for."""
        return hashlib.sha256(self.salt + self.digest).hexdigest()[:16]


def _scrypt(secret: bytes, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * p + 2**20, dklen=length)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """The PHC scrypt string of `secret`, with a fresh random salt."""
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(secret.encode("utf-8"), salt, _LN, _R, _P, _HASH_BYTES)
    return f"$scrypt$ln={_LN},r={_R},p={_P}${_b64(salt)}${_b64(digest)}"


def parse_secret_hash(text: str) -> SecretHash:
    """The parsed hash, or ValueError naming what is wrong (never echoing the value)."""
    found = _FORMAT.match(text.strip())
    if found is None:
        raise ValueError("is not a hash made by `syncd hash-secret` ($scrypt$ln=..,r=..,p=..$salt$hash)")
    ln, r, p = (int(found.group(i)) for i in (1, 2, 3))
    if not (10 <= ln <= 20 and 1 <= r <= 16 and 1 <= p <= 4):
        raise ValueError("has scrypt parameters out of range (ln 10-20, r 1-16, p 1-4)")
    try:
        salt, digest = _unb64(found.group(4)), _unb64(found.group(5))
    except ValueError:
        raise ValueError("is not valid base64") from None
    return SecretHash(ln, r, p, salt, digest)
