"""Every API error is JSON: {"code", "message", "field"?} with a stable code.

`api_exception_handler` maps the domain's PaymentError (its own code, field and
status), practices.access.NotPermitted, Django's PermissionDenied and Http404,
and DRF's validation, authentication, throttling and request errors onto that
shape. Messages are written for people and safe to show: they never repeat a
value that was sent (so never a card number) and never carry internals.
"""

from __future__ import annotations

import structlog
from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from payments.errors import PaymentError

log = structlog.get_logger("payments.api")


class ApiError(exceptions.APIException):
    """An API-layer refusal with our code (idempotency, bad headers)."""

    def __init__(self, message: str, *, code: str, status_code: int, field: str | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.field = field


def _body(code: str, message: str, field: str | None = None) -> dict:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    return body


def _first_error(detail, path: str = "") -> tuple[str, str, str]:
    """(field path, message, DRF code) of the first error in a ValidationError's detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            child = path if key == "non_field_errors" else (f"{path}.{key}" if path else str(key))
            return _first_error(value, child)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and value:
                return _first_error(value, f"{path}[{index}]" if isinstance(value, dict) else path)
            return path, str(value), getattr(value, "code", "invalid")
    return path, str(detail), getattr(detail, "code", "invalid")


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "invalid_token",
    exceptions.ParseError: "malformed_request",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotFound: "not_found",
    exceptions.PermissionDenied: "permission_denied",
}


def error_response(exc: Exception) -> Response | None:
    """The JSON error response for `exc`, or None for an unexpected exception (a 500)."""
    headers = {}
    if isinstance(exc, PaymentError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, ApiError):
        return Response(_body(exc.error_code, str(exc.detail), exc.field), status=exc.status_code)
    if isinstance(exc, Http404):
        return Response(_body("not_found", "Not found."), status=404)
    if isinstance(exc, PermissionDenied):  # includes practices.access.NotPermitted
        message = str(exc) or "You do not have permission to do this."
        return Response(_body(getattr(exc, "code", "permission_denied"), message), status=403)
    if isinstance(exc, exceptions.ValidationError):
        field, message, drf_code = _first_error(exc.detail)
        code = "missing_field" if drf_code in ("required", "null", "blank") else "invalid_field"
        if not field:
            code = "invalid_request"
        return Response(_body(code, message, field or None), status=400)
    if isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait) + 1 if exc.wait is not None else 60
        headers["Retry-After"] = str(wait)
        return Response(
            _body("rate_limited", f"Too many requests. Try again in {wait} seconds."),
            status=429,
            headers=headers,
        )
    if isinstance(exc, exceptions.APIException):
        code = next(
            (c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)),
            "request_refused",
        )
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait) + 1)
        return Response(_body(code, str(exc.detail)), status=exc.status_code, headers=headers)
    return None


def api_exception_handler(exc, context):
    response = error_response(exc)
    if response is not None and response.status_code >= 500:
        log.warning("api_error", code=response.data["code"], status=response.status_code)
    return response
