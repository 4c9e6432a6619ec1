"""OAuth settings shared by the SCIM and daemon suites: a signing key, two client secrets and their hashes."""

from __future__ import annotations

from functools import cache
from typing import Any

from syncd.secret_hash import hash_secret

__all__ = ["OAUTH_KEY", "SECRETS", "oauth_section", "secret_hash"]

OAUTH_KEY = "oauth-test-signing-key-0123456789abcdef0123456789"
#: the client's current secret and the one it rotates to
SECRETS = ("entra-client-secret-one-0123456789abcdef", "entra-client-secret-two-0123456789abcdef")


@cache
def secret_hash(secret: str) -> str:
    """The scrypt hash of `secret` (made once per process: each costs about 0.1 s)."""
    return hash_secret(secret)


def oauth_section(
    *,
    signing_key: str = OAUTH_KEY,
    hashes: list[str] | None = None,
    source: str = "entra",
    client_id: str = "entra-app",
    priority: int | None = None,
    token_lifetime: str | None = None,
    clients: list[dict[str, Any]] | None = None,
    duplicate: bool = False,
) -> dict[str, Any]:
    """The `oauth` and `oauth_clients` keys of a `scim:` section: one client (`client_id`, bound to `source`)."""
    client: dict[str, Any] = {
        "client_id": client_id,
        "source": source,
        "secret_hashes": [secret_hash(SECRETS[0])] if hashes is None else hashes,
    }
    if priority is not None:
        client["priority"] = priority
    oauth: dict[str, Any] = {"signing_key": signing_key}
    if token_lifetime is not None:
        oauth["token_lifetime"] = token_lifetime
    listed = [client, client] if duplicate else [client]
    return {"oauth": oauth, "oauth_clients": listed if clients is None else clients}
