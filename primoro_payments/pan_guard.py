"""Refuse any request that carries a card number, before any view can store or log it.

Card entry happens only on terminals and in provider-hosted fields (§4.1,
§5.2), so a card number arriving at us is always a mistake — a receptionist
typing one into a notes box, an integration sending the wrong field. The
request is refused with 400, the field is named, and the value is never echoed,
stored or logged. Query strings, the request headers whose values we keep
(KEPT_HEADERS), form fields and JSON bodies (any depth, strings and numbers)
are checked; a body that is neither is checked as text.

Bodies are read as UTF-8 only (RFC 8259 JSON is UTF-8): a body that declares
another charset, is not UTF-8, or holds a NUL byte (UTF-16 and UTF-32 text,
which json.loads and DRF would otherwise decode) is refused with 415 before any
view reads it, so the text checked here is the text every view sees.
"""

from __future__ import annotations

import json

import structlog
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

from integrations.signing import EVENT_ID_HEADER
from primoro_payments.pan import contains_card_number

log = structlog.get_logger("primoro_payments.pan_guard")

MESSAGE = (
    "This looks like a card number. Card numbers must never be typed or sent here: "
    "take card payments on the terminal or the secure hosted card page."
)


# Request headers whose values the project stores or echoes: the API's idempotency key
# (IdempotencyKey.key) and an inbound module's event id (InboundEvent.event_id).
# X-Request-ID is cleaned where it is read (logging.clean_request_id: a card-like id
# is replaced). Signatures and credentials are compared, never kept, and are not
# checked: a hex signature holds a Luhn-valid digit run by chance about once in 100.
KEPT_HEADERS = ("Idempotency-Key", EVENT_ID_HEADER)
UTF8_CHARSETS = frozenset({"utf-8", "utf8"})
CHARSET_MESSAGE = "Send the body as UTF-8 (Content-Type: application/json; charset=utf-8)."


class UnsupportedCharset(Exception):
    """The body is not UTF-8 text: refused (415) before anything reads it."""


def _first_card_field(value, path: str) -> str | None:
    """The path of the first field whose value (or key) holds a card number."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if contains_card_number(str(key)):
                return path or "(key)"
            found = _first_card_field(item, child)
            if found:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_card_field(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, bool) or value is None:
        return None
    return path or "(body)" if contains_card_number(str(value)) else None


def _querydict_field(querydict) -> str | None:
    for key, values in querydict.lists():
        if contains_card_number(key):
            return "(parameter name)"
        for value in values:
            if contains_card_number(value):
                return key
    return None


def _body_text(request, body: bytes) -> str:
    charset = (request.content_params or {}).get("charset", "utf-8").strip().lower()
    if charset not in UTF8_CHARSETS or b"\x00" in body:
        raise UnsupportedCharset
    try:
        return body.decode("utf-8-sig")  # json.loads(bytes) also skips a UTF-8 BOM
    except UnicodeDecodeError:
        raise UnsupportedCharset from None


def find_card_field(request) -> str | None:
    """The name of the first query parameter, kept header or body field holding a card number.

    Raises UnsupportedCharset for a body that is not UTF-8 text.
    """
    found = _querydict_field(request.GET)
    if found:
        return found
    for header in KEPT_HEADERS:
        if contains_card_number(request.headers.get(header, "")):
            return header
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    content_type = request.content_type or ""
    # Read the raw body first: parsing multipart consumes the stream, and views that
    # verify a signature over the body must still be able to read it (else a 500).
    body = request.body
    if content_type == "multipart/form-data":
        _body_text(request, b"")  # the declared charset decodes the fields
        found = _querydict_field(request.POST)
        # File parts are not in request.POST: check the whole multipart body as text.
        text = body.decode("utf-8", errors="replace")
        return found or ("(body)" if contains_card_number(text) else None)
    if not body:
        return None
    text = _body_text(request, body)
    if content_type == "application/x-www-form-urlencoded":
        return _querydict_field(request.POST)
    # Receivers parse JSON whatever the content type says, so try it for every body.
    try:
        return _first_card_field(json.loads(text), "")
    except ValueError:
        pass  # not JSON after all: check it as text
    return "(body)" if contains_card_number(text) else None


class PanGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            field = find_card_field(request)
        except UnsupportedCharset:
            log.warning("body_charset_refused", path=request.path, method=request.method)
            return JsonResponse(
                {
                    "code": "unsupported_charset",
                    "message": CHARSET_MESSAGE,
                    "field": "Content-Type",
                },
                status=415,
            )
        if field is None:
            return self.get_response(request)
        log.warning("card_number_refused", path=request.path, method=request.method, field=field)
        wants_json = (
            request.path.startswith(("/api/", "/webhooks/"))
            or "json" in (request.content_type or "")
            or "json" in request.headers.get("Accept", "")
        )
        if wants_json:
            return JsonResponse(
                {"code": "card_number_refused", "message": MESSAGE, "field": field}, status=400
            )
        html = render_to_string(
            "card_number_refused.html", {"field": field, "message": MESSAGE}, request=request
        )
        return HttpResponse(html, status=400)
