"""Settings of the SCIM 2.0 service provider (`scim:`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from syncd.secret_hash import parse_secret_hash
from syncd.settings._base import Interval, Secret, Strict, is_placeholder, read_secret

__all__ = ["SECRETS_UNSET", "OAuthClient", "OAuthSettings", "ScimSettings", "ScimToken"]

#: validation context key: secrets whose environment variable is unset were loaded as None on purpose

SECRETS_UNSET = "secrets_unset"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = r"^[A-Za-z0-9_.-]+$"
#: HS256 keys shorter than the hash output are weak (RFC 7518 §3.2): refused
MIN_SIGNING_KEY_BYTES = 32


class ScimToken(Strict):
    """One identity provider's bearer token; its name is the source of everything it writes."""

    name: str = Field(min_length=1, pattern=_NAME)
    token: SecretStr | None = None
    #: hex SHA-256 of the token, instead of the token itself
    token_sha256: str | None = None
    priority: int = 0

    @model_validator(mode="after")
    def _one_form(self, info: ValidationInfo) -> ScimToken:
        offline = bool(info.context and info.context.get(SECRETS_UNSET))
        if self.token is None and self.token_sha256 is None and offline:
            return self  # loaded for a command that never serves (explain --offline): the token is simply off
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token and token_sha256")
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("token is empty")
        if self.token_sha256 is not None and not _SHA256.match(self.token_sha256):
            raise ValueError("token_sha256 is not 64 hexadecimal characters")
        return self


class OAuthSettings(Strict):
    """The OAuth 2.0 token endpoint (`POST /oauth/token`, client credentials): how its access tokens are signed."""

    #: the HS256 key signing the access tokens; unset, empty or an example value: OAuth is off
    signing_key: Secret = None
    signing_key_file: Path | None = None
    #: how long an access token is valid (default 1 h, at most 24 h)
    token_lifetime: Interval = Field(3600.0, ge=1, le=86400)
    #: the `aud` claim written into every token and required of every token presented
    audience: str = Field("syncd-scim", min_length=1, max_length=500)
    #: the `iss` claim written and required
    issuer: str = Field("syncd", min_length=1, max_length=500)

    @model_validator(mode="after")
    def _key(self) -> OAuthSettings:
        key = read_secret(self.signing_key, self.signing_key_file, "signing_key")
        object.__setattr__(self, "signing_key", key)
        short = key is not None and len(key.get_secret_value().encode()) < MIN_SIGNING_KEY_BYTES
        if short and self.key_problem() is None:
            raise ValueError(
                f"signing_key is shorter than {MIN_SIGNING_KEY_BYTES} bytes: use a long random key "
                "(openssl rand -hex 32), or leave it empty to turn OAuth off"
            )
        return self

    def key_problem(self) -> str | None:
        """Why OAuth is off (the key unset or an example value), or None when the key signs tokens."""
        if self.signing_key is None:
            return "is not set"
        if is_placeholder(self.signing_key.get_secret_value()):
            return "is an example value, not a secret"
        return None


class OAuthClient(Strict):
    """One OAuth client (an identity provider's provisioning job): its id, the source it writes as, its secrets."""

    client_id: str = Field(min_length=1, max_length=200, pattern=_NAME)
    #: the SCIM source it speaks for: a scim.tokens name, or a name of its own (not an LDAP source's)
    source: str = Field(min_length=1, pattern=_NAME)
    #: one or two hashes made by `syncd hash-secret` (two while a secret is being rotated)
    secret_hashes: list[str] = Field(min_length=1, max_length=2)
    #: the source's priority when it has no scim.tokens entry (which otherwise gives it)
    priority: int | None = None

    @field_validator("secret_hashes")
    @classmethod
    def _hashes(cls, hashes: list[str]) -> list[str]:
        for i, text in enumerate(hashes):
            try:
                parse_secret_hash(text)
            except ValueError as exc:
                raise ValueError(f"secret_hashes[{i}] {exc}") from None
        if len(set(hashes)) != len(hashes):
            raise ValueError("secret_hashes repeats a hash")
        return hashes


class ScimSettings(Strict):
    """SCIM pushes from Okta, Entra ID and other identity providers."""

    enabled: bool = False
    tokens: list[ScimToken] = Field(default_factory=list)
    #: OAuth 2.0 client credentials (RFC 6749 §4.4) next to the static tokens: the token endpoint's settings
    oauth: OAuthSettings = OAuthSettings()
    oauth_clients: list[OAuthClient] = Field(default_factory=list)
    #: which SCIM attribute becomes the LiteLLM user_id
    user_id_attribute: Literal["userName", "email", "externalId", "id"] = "userName"
    #: what a SCIM DELETE of a user does: suspend (default) or delete by policy.deactivation
    delete_policy: Literal["suspend", "policy"] = "suspend"
    groups_as_teams: bool = False
    #: a SCIM group's grant (syncd's Group extension) may give proxy_admin only when this is true
    allow_admin_grants: bool = False
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_filter_length: int = Field(4096, ge=64)
    #: seconds to wait for more writes before reconciling
    debounce_s: float = Field(0.5, ge=0, le=60)
    #: the most resources one list or search answers (ServiceProviderConfig filter.maxResults)
    max_results: int = Field(1000, ge=1, le=10_000)
    #: the SCIM base URL as the identity providers reach it (for meta.location); unset: taken from each request
    public_url: str | None = Field(None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _real_tokens(self) -> ScimSettings:
        """Serving SCIM with an example token (change-me-okta, the example's digest) would let anyone in: refused."""
        if not self.enabled:
            return self
        for i, token in enumerate(self.tokens):
            if token.token is None and token.token_sha256 is None:
                continue  # left unset on purpose for a command that never serves (ScimToken._one_form)
            secret = token.token.get_secret_value() if token.token is not None else token.token_sha256 or ""
            if is_placeholder(secret):
                key = "token" if token.token is not None else "token_sha256"
                raise ValueError(f"tokens[{i}].{key} ({token.name}) is an example value, not a secret: set a real one")
        return self

    @model_validator(mode="after")
    def _clients(self) -> ScimSettings:
        """Client ids are unique; a source has one priority, whether given by its token or by its clients."""
        ids = [client.client_id for client in self.oauth_clients]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"oauth_clients: client_id repeated: {', '.join(repeated)}")
        given = {token.name: token.priority for token in self.tokens}
        for i, client in enumerate(self.oauth_clients):
            if client.priority is None:
                continue
            known = given.setdefault(client.source, client.priority)
            if known != client.priority:
                raise ValueError(
                    f"oauth_clients[{i}].priority ({client.priority}) differs from source {client.source}'s ({known})"
                )
        return self

    @property
    def source_names(self) -> list[str]:
        """Every SCIM source: the tokens' names, then the sources of OAuth clients that have no token."""
        names = [token.name for token in self.tokens]
        names += sorted({c.source for c in self.oauth_clients} - set(names))
        return names

    @property
    def source_priorities(self) -> dict[str, int]:
        """Each SCIM source's priority (a token's, else its clients', else 0)."""
        found = {name: 0 for name in self.source_names}
        found.update({c.source: c.priority for c in self.oauth_clients if c.priority is not None})
        found.update({token.name: token.priority for token in self.tokens})
        return found

    @property
    def oauth_active(self) -> bool:
        """True when /oauth/token issues tokens: SCIM on, a real signing key, at least one client."""
        return self.enabled and bool(self.oauth_clients) and self.oauth.key_problem() is None

    def short_tokens(self) -> list[str]:
        """The names of the tokens given in clear that are shorter than 32 bytes (worth a warning)."""
        return [t.name for t in self.tokens if t.token is not None and len(t.token.get_secret_value().encode()) < 32]
