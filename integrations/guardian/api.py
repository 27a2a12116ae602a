"""GET /api/v1/guardian/signals/: the Guardian's read-only feed, behind its own bearer token.

Only GET is routed here (every other verb is 405), and the token is accepted
nowhere else: it is not a Django user, a session or a DRF credential, so no
other endpoint can be reached with it. The token is compared in constant time.
With GUARDIAN_PRACTICE_IDS set, the token sees those practices only.

Query parameters: `cursor` (from the previous page's `next_cursor`), `since`
(ISO 8601 with offset), `practice` (repeatable), `limit` (1-500, default 100).

A DRF view only so that it is described in /api/schema/ (integrations/guardian/schema.py);
DRF authenticates nothing here: the token check below is the only one.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import timedelta

import structlog
from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from integrations.guardian import schema
from integrations.guardian.signals import (
    SIGNAL_FIELDS,
    Cursor,
    Query,
    aware_utc,
    signals_page,
)
from payments.api.errors import api_exception_handler

log = structlog.get_logger("integrations.guardian")

DEFAULT_LIMIT = 100


def _error(status: int, code: str, message: str, field: str | None = None) -> JsonResponse:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    return JsonResponse(body, status=status)


def guardian_token_valid(header: str | None) -> bool:
    """True when `Authorization: Bearer <token>` carries the configured Guardian token."""
    token = settings.GUARDIAN_API_TOKEN
    scheme, _, given = (header or "").partition(" ")
    if not token or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _scope(request) -> frozenset | JsonResponse | None:
    allowed = {str(value).lower() for value in settings.GUARDIAN_PRACTICE_IDS}
    requested = set()
    for value in request.GET.getlist("practice"):
        try:
            requested.add(str(uuid.UUID(value)))
        except ValueError:
            return _error(400, "invalid_field", "practice is a practice id.", "practice")
    if allowed and not requested <= allowed:
        return _error(403, "practice_out_of_scope", "This token does not cover that practice.")
    if requested:
        return frozenset(requested)
    return frozenset(allowed) if allowed else None


class SignalsView(APIView):
    """GET only (any other verb is 405); a bearer token, not a session (so no CSRF)."""

    http_method_names = ["get"]
    authentication_classes = []  # the Guardian's token is checked in get(), and only there
    permission_classes = []
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self):
        return api_exception_handler

    @extend_schema(**schema.SIGNALS)
    def get(self, request):
        if not guardian_token_valid(request.headers.get("Authorization")):
            response = _error(401, "invalid_token", "Send the AI Guardian's bearer token.")
            response["WWW-Authenticate"] = 'Bearer realm="guardian"'
            return response
        scope = _scope(request)
        if isinstance(scope, JsonResponse):
            return scope
        try:
            after = Cursor.decode(request.GET["cursor"]) if request.GET.get("cursor") else None
        except ValueError:
            return _error(
                400, "invalid_cursor", "Use the next_cursor of a previous page.", "cursor"
            )
        since = None
        if request.GET.get("since"):
            since = aware_utc(request.GET["since"])
            if since is None:
                return _error(
                    400, "invalid_field", "since is an ISO 8601 time with offset.", "since"
                )
        try:
            limit = int(request.GET.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return _error(400, "invalid_field", "limit is a whole number.", "limit")
        # Leave the last moments out: a transaction still committing may yet add a
        # signal there, and a client paging by cursor would otherwise skip it.
        settle = timedelta(seconds=settings.GUARDIAN_SETTLE_SECONDS)
        try:
            page = signals_page(
                Query(
                    after=after,
                    since=since,
                    until=timezone.now() - settle,
                    practice_ids=scope,
                    limit=limit,
                )
            )
        except ValueError:  # a cursor whose key does not fit its source
            return _error(
                400, "invalid_cursor", "Use the next_cursor of a previous page.", "cursor"
            )
        log.info("guardian_signals_read", count=len(page.signals), practices=sorted(scope or []))
        return JsonResponse(
            {
                "signals": page.signals,
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
                "fields": list(SIGNAL_FIELDS),
            }
        )


signals_view = SignalsView.as_view()
