"""`POST /webhooks/gocardless/`: verify, store each event once, answer fast.

GoCardless signs the raw body: `Webhook-Signature` is the hex HMAC-SHA256 of
it keyed with the endpoint secret (settings.GOCARDLESS_WEBHOOK_SECRET). We
compare in constant time *before* parsing anything and answer 498 to a bad
or missing signature, storing nothing. A body holds up to 250 events, mixed
and out of order; each event we handle is stored once by its id
(integrations.webhooks.webhook_event_store) and processed later by
`subscriptions.handlers`. If none is one we handle, the answer is 204; else
200 with counts. Nothing here changes a subscription record.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations.webhooks import webhook_event_store
from primoro_payments import metrics
from subscriptions.lifecycle import is_handled

log = structlog.get_logger("subscriptions.webhooks")

PROVIDER = "gocardless"
INVALID_SIGNATURE = 498  # GoCardless's documented answer to a bad signature
MAX_EVENTS = 250


def signature_valid(body: bytes, header: str, secret: str) -> bool:
    if not secret or not header:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.strip().lower())


def _resource_ref(event: dict) -> str:
    links = event.get("links") if isinstance(event.get("links"), dict) else {}
    for name in ("payment", "mandate", "payout"):
        if isinstance(links.get(name), str):
            return links[name]
    return ""


@csrf_exempt
@require_POST
def gocardless_webhook(request: HttpRequest) -> HttpResponse:
    body = request.body
    if not signature_valid(
        body, request.headers.get("Webhook-Signature", ""), settings.GOCARDLESS_WEBHOOK_SECRET
    ):
        log.warning("gocardless_webhook_bad_signature", length=len(body))
        metrics.webhook_event("gocardless", "rejected")
        return HttpResponse(status=INVALID_SIGNATURE)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return JsonResponse({"error": "The body is not JSON."}, status=400)
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        return JsonResponse(
            {"error": f"Expected 'events': a list of at most {MAX_EVENTS}."}, status=400
        )
    handled = [
        event
        for event in events
        if isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and event["id"]
        and is_handled(event.get("resource_type"), event.get("action"))
    ]
    meta = document.get("meta")
    webhook_id = meta.get("webhook_id") if isinstance(meta, dict) else None
    if not handled:
        log.info("gocardless_webhook_nothing_handled", webhook_id=webhook_id, events=len(events))
        return HttpResponse(status=204)
    stored = 0
    for event in handled:
        _, created = webhook_event_store(
            provider=PROVIDER,
            event_id=event["id"],
            body=event,
            event_type=f"{event['resource_type']}.{event['action']}",
            resource_ref=_resource_ref(event),
        )
        stored += created
    log.info(
        "gocardless_webhook_received",
        webhook_id=webhook_id,
        events=len(events),
        handled=len(handled),
        stored=stored,
    )
    return JsonResponse(
        {
            "received": len(events),
            "stored": stored,
            "duplicates": len(handled) - stored,
            "not_handled": len(events) - len(handled),
        }
    )
