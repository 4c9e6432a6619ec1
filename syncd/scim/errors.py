"""SCIM errors: every failure is a scim2-models `SCIMException` (status and scimType) rendered here as an Error body.

SCIMException (scim2-models)
 +-- UnauthorizedException 401, NotFoundException 404, PreconditionFailedException 412,
 +-- PayloadTooLargeException 413, UniquenessException 409 uniqueness,
 +-- InvalidFilterException, InvalidSyntaxException, InvalidValueException, NoTargetException,
 +-- InvalidPathException, MutabilityException: 400 with their scimType
 +-- MethodNotAllowed 405 (here)
"""

from __future__ import annotations

import json
from typing import Any

from scim2_models import SCIMException, UnauthorizedException
from starlette.responses import Response

__all__ = [
    "ERROR_SCHEMA",
    "SCIM_MEDIA_TYPE",
    "MethodNotAllowed",
    "ScimResponse",
    "error_response",
    "status_error",
    "unauthorized",
]

SCIM_MEDIA_TYPE = "application/scim+json"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class MethodNotAllowed(SCIMException):
    """The endpoint does not take this HTTP method."""

    status = 405
    _default_detail = "Method not allowed on this endpoint"


def unauthorized(reason: str, detail: str) -> UnauthorizedException:
    """A 401 whose `reason` (missing, malformed, invalid, expired, revoked) labels syncd_scim_auth_failures_total."""
    error = UnauthorizedException(detail=detail)
    error.context["reason"] = reason
    return error


def status_error(status: int, detail: str) -> SCIMException:
    """A SCIM error of any HTTP status (429, 503, a 404 or 405 met before the router), without a scimType."""
    error = SCIMException(detail=detail)
    error.status = status
    return error


class ScimResponse(Response):
    """A JSON response with the SCIM media type."""

    media_type = SCIM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        """Compact JSON, UTF-8."""
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_response(error: SCIMException, headers: dict[str, str] | None = None) -> ScimResponse:
    """The SCIM Error body (RFC 7644 §3.12) for `error`; `status` is a string there, as the RFC writes it."""
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(error.status), "detail": error.detail}
    if error.scim_type:
        body["scimType"] = error.scim_type
    return ScimResponse(body, status_code=error.status, headers=headers)
