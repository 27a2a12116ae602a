"""OpenAPI pieces shared by the views: security schemes, error responses, common parameters."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from payments.api.serializers import ErrorSerializer


class PatientJWTScheme(OpenApiAuthenticationExtension):
    target_class = "payments.api.auth.PatientJWTAuthentication"
    name = "patientJWT"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A patient token from the platform identity service (RS256/ES256; "
            "claims sub, iss, aud, exp). See docs/api.md.",
        }


class StaffTokenScheme(OpenApiAuthenticationExtension):
    target_class = "payments.api.auth.StaffTokenAuthentication"
    name = "staffToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A tablet token (pst_...) from `manage.py staff_api_token`.",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "payments.api.auth.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "The staff portal's session (unsafe methods also need X-CSRFToken).",
        }


_MESSAGES = {
    400: "The request is malformed or a field is invalid (`field` names it).",
    401: "No valid credentials: send a bearer token.",
    403: "Signed in, but not allowed to do this.",
    404: "No such record for you (records of other patients or practices are never revealed).",
    409: "The record is not in a state that allows this, or the Idempotency-Key is in use.",
    410: "The payment link can no longer be used (expired, used or cancelled).",
    415: "Send JSON (Content-Type: application/json).",
    422: "The Idempotency-Key was already used with a different request.",
    429: "Too many requests: wait for Retry-After seconds.",
    503: "The card provider cannot be reached right now; nothing changed, try again.",
}


_EXAMPLES = {
    400: {
        "code": "invalid_amount",
        "message": "The amount must be more than zero.",
        "field": "amount",
    },
    404: {"code": "not_found", "message": "No such balance."},
    429: {"code": "rate_limited", "message": "Too many requests. Try again in 12 seconds."},
}


def error(description: str, examples: list | None = None) -> OpenApiResponse:
    """One error response with the {"code","message","field"?} body."""
    return OpenApiResponse(
        response=ErrorSerializer, description=description, examples=examples or []
    )


def errors(*statuses: int) -> dict:
    """Error responses of the patient, link and staff API, with their usual meaning."""
    return {
        status: error(
            _MESSAGES[status],
            [OpenApiExample(f"error {status}", value=_EXAMPLES[status], status_codes=[status])]
            if status in _EXAMPLES
            else None,
        )
        for status in statuses
    }


# Security schemes of the endpoints outside DRF authentication (their views check them),
# added to the schema's components by payments.api.urls.SCHEMA_SETTINGS.
SECURITY_SCHEMES = {
    "moduleSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Primoro-Signature",
        "description": '`t=<unix seconds>,v1=<hex HMAC-SHA256(module secret, "<t>.<event id>." '
        "+ raw body)>`, with the calling module's INBOUND_<MODULE>_SECRET and the "
        "X-Primoro-Event-Id sent; at most 300 s old. See docs/contracts.md.",
    },
    "guardianToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The AI Guardian's read-only token (GUARDIAN_API_TOKEN); accepted "
        "nowhere else.",
    },
}


IDEMPOTENCY_KEY = OpenApiParameter(
    name="Idempotency-Key",
    type={"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    location=OpenApiParameter.HEADER,
    required=False,
    description="Any unique string up to 255 characters (e.g. a UUID). A repeat with the same "
    "key and body returns the first response; a different body is refused (422).",
)


def uuid_path(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name=name, type=OpenApiTypes.UUID, location=OpenApiParameter.PATH, description=description
    )


LINK_TOKEN = OpenApiParameter(
    name="token",
    type={"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
    location=OpenApiParameter.PATH,
    description="The token from the pay-by-link URL (/pay/<token>/).",
)
