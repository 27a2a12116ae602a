"""Every error under /api/ is JSON in the API's shape {"code", "message"}, whoever made it.

DRF views answer their own errors (payments.api.errors) and the inbound and
Guardian views write JSON themselves; what is left is what Django or a
third-party view makes: an unrouted path (404), a method a plain view refuses
(405), an uncaught exception (500), the schema views' own errors. This
middleware turns any such non-JSON error response under /api/ into our shape,
keeping its status and the headers a client acts on. Messages are fixed text:
nothing from the request or the exception is echoed.
"""

from __future__ import annotations

from django.http import JsonResponse

API_PREFIX = "/api/"
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")

_ERRORS = {
    400: ("malformed_request", "The request could not be understood."),
    401: ("not_authenticated", "Authentication is required."),
    403: ("permission_denied", "You do not have permission to do this."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "This method is not allowed here."),
    406: ("not_acceptable", "This endpoint answers JSON only."),
    413: ("request_too_large", "The request is too large."),
    415: ("unsupported_media_type", "Send the body as JSON."),
    429: ("rate_limited", "Too many requests. Try again later."),
    503: ("unavailable", "The service is unavailable. Please try again later."),
}


def api_error_body(status: int) -> dict:
    if status in _ERRORS:
        code, message = _ERRORS[status]
    elif status >= 500:
        code, message = "server_error", "Something went wrong on our side. Please try again later."
    else:
        code, message = "request_refused", "The request was refused."
    return {"code": code, "message": message}


class ApiJsonErrorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not request.path.startswith(API_PREFIX)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        replacement = JsonResponse(
            api_error_body(response.status_code), status=response.status_code
        )
        for header in _KEPT_HEADERS:
            if header in response:
                replacement[header] = response[header]
        return replacement
