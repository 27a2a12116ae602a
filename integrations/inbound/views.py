"""The inbound endpoint: authenticate the calling module, then hand the event to its contract."""

from __future__ import annotations

import structlog
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from integrations.inbound.contracts import contract_for
from integrations.inbound.models import Module
from integrations.inbound.receive import inbound_receive
from integrations.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, SignatureError, verify

log = structlog.get_logger("integrations.inbound")


def _error(status: int, code: str, message: str, **extra) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, **extra}, status=status)


@csrf_exempt  # authenticated by the module's HMAC signature, not by a session
def receive(request, module: str, event_type: str):
    if request.method != "POST":
        response = _error(405, "method_not_allowed", "Inbound events are POSTed.")
        response["Allow"] = "POST"
        return response
    if module not in Module.values:
        return _error(404, "unknown_module", "No such module.")
    secret = settings.INBOUND_SECRETS.get(module) or ""
    if not secret:
        log.warning("inbound_module_not_configured", module=module)
        return _error(503, "module_not_configured", "This module has no signing secret here yet.")
    try:
        verify(
            secret,
            request.headers.get(SIGNATURE_HEADER),
            request.body,
            tolerance=settings.INBOUND_SIGNATURE_TOLERANCE_SECONDS,
        )
    except SignatureError as exc:
        log.warning("inbound_invalid_signature", module=module, reason=str(exc))
        return _error(401, "invalid_signature", "The signature is missing, stale or wrong.")
    event_id = (request.headers.get(EVENT_ID_HEADER) or "").strip()
    if not event_id or len(event_id) > 200:
        return _error(
            400,
            "missing_event_id",
            "Send the event id (at most 200 characters).",
            field=EVENT_ID_HEADER,
        )
    if contract_for(module, event_type) is None:
        return _error(404, "unknown_event_type", f"{module} sends no {event_type} events.")
    reply = inbound_receive(
        module=module, event_type=event_type, event_id=event_id, raw_body=request.body
    )
    response = JsonResponse(reply.body, status=reply.status)
    if reply.replay:
        response["X-Primoro-Duplicate"] = "true"
    return response
