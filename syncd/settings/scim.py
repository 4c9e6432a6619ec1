"""Settings of the SCIM 2.0 service provider (`scim:`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, model_validator

from syncd.settings._base import Strict, is_placeholder

__all__ = ["SECRETS_UNSET", "ScimSettings", "ScimToken"]

#: validation context key: secrets whose environment variable is unset were loaded as None on purpose

SECRETS_UNSET = "secrets_unset"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class ScimToken(Strict):
    """One identity provider's bearer token; its name is the source of everything it writes."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
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


class ScimSettings(Strict):
    """SCIM pushes from Okta, Entra ID and other identity providers."""

    enabled: bool = False
    tokens: list[ScimToken] = Field(default_factory=list)
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

    def short_tokens(self) -> list[str]:
        """The names of the tokens given in clear that are shorter than 32 bytes (worth a warning)."""
        return [t.name for t in self.tokens if t.token is not None and len(t.token.get_secret_value().encode()) < 32]
