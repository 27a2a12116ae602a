"""The inbound endpoint: authenticate the calling module, then hand the event to its contract.

A DRF view only so that it is described in /api/schema/ (integrations/inbound/schema.py);
DRF authenticates and parses nothing here: the signature is checked over the raw body
below, after the module is known, and the contract parses the body.
"""

from __future__ import annotations

import structlog
from django.conf import settings
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from integrations.inbound import schema
from integrations.inbound.contracts import contract_for
from integrations.inbound.models import Module
from integrations.inbound.receive import inbound_receive
from integrations.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    valid_event_id,
    verify,
)
from payments.api.errors import api_exception_handler

log = structlog.get_logger("integrations.inbound")


def _error(status: int, code: str, message: str, **extra) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, **extra}, status=status)


class InboundEventView(APIView):
    """POST only (any other verb is 405); an HMAC signature, not a session (so no CSRF)."""

    http_method_names = ["post"]
    authentication_classes = []  # the module's signature is checked below
    permission_classes = []
    parser_classes = [JSONParser]  # documents the body; request.data is never read
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self):
        return api_exception_handler

    @extend_schema(**schema.RECEIVE)
    def post(self, request, module: str, event_type: str):
        if module not in Module.values:
            return _error(404, "unknown_module", "No such module.")
        secret = settings.INBOUND_SECRETS.get(module) or ""
        if not secret:
            log.warning("inbound_module_not_configured", module=module)
            return _error(
                503, "module_not_configured", "This module has no signing secret here yet."
            )
        event_id = (request.headers.get(EVENT_ID_HEADER) or "").strip()
        if not event_id:
            return _error(
                400,
                "missing_event_id",
                "Send the event id (at most 200 characters).",
                field=EVENT_ID_HEADER,
            )
        if not valid_event_id(event_id):
            return _error(
                400,
                "invalid_event_id",
                "The event id is at most 200 printable ASCII characters, without a full stop.",
                field=EVENT_ID_HEADER,
            )
        try:
            verify(
                secret,
                request.headers.get(SIGNATURE_HEADER),
                request.body,
                event_id=event_id,
                tolerance=settings.INBOUND_SIGNATURE_TOLERANCE_SECONDS,
            )
        except SignatureError as exc:
            log.warning("inbound_invalid_signature", module=module, reason=str(exc))
            return _error(401, "invalid_signature", "The signature is missing, stale or wrong.")
        if contract_for(module, event_type) is None:
            return _error(404, "unknown_event_type", f"{module} sends no {event_type} events.")
        reply = inbound_receive(
            module=module, event_type=event_type, event_id=event_id, raw_body=request.body
        )
        response = JsonResponse(reply.body, status=reply.status)
        if reply.replay:
            response["X-Primoro-Duplicate"] = "true"
        return response


receive = InboundEventView.as_view()
