"""The webhook pipeline shared by every provider: store once, answer fast, process in a task.

A receiver (one per provider, in `integrations/<provider>/webhooks.py` or the
app that owns the events) verifies the signature on the raw body *before*
parsing, then calls `webhook_event_store`. Processing happens in the
`process_webhook_event` task, which calls the handler registered for the
provider with `register_handler`. Handlers run inside a transaction holding a
lock on the event row, call the service layer, and return the event's new
status; raising `RetryableWebhookError` leaves it for another attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from integrations.models import WebhookEvent
from primoro_payments import metrics

log = structlog.get_logger("integrations.webhooks")

MAX_PROCESSING_ATTEMPTS = 8


class RetryableWebhookError(Exception):
    """Processing could not finish now (e.g. a provider look-up failed); try again later."""


@dataclass(frozen=True)
class HandlerResult:
    status: str  # one of WebhookEvent.Status
    payment_id: object = None
    practice_id: object = None
    note: str = ""


Handler = Callable[[WebhookEvent], HandlerResult]
_HANDLERS: dict[str, Handler] = {}


def register_handler(provider: str, handler: Handler) -> None:
    """Called from an AppConfig.ready(): which function processes this provider's events."""
    _HANDLERS[provider] = handler


def _without_nul(value):
    """PostgreSQL text and jsonb cannot hold U+0000: a verified body keeps U+FFFD in its place."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def webhook_event_store(
    *, provider: str, event_id: str, body: dict, event_type: str = "", resource_ref: str = ""
) -> tuple[WebhookEvent | None, bool]:
    """Store a verified event once. Returns (event, created); a duplicate gives (None, False).

    On creation, processing is queued after commit.
    """
    body, event_id, event_type, resource_ref = _without_nul(
        [body, event_id, event_type, resource_ref]
    )
    # A receiver calls this outside any transaction: one INSERT in autocommit, with no
    # BEGIN and COMMIT round trips on the ingest path. Inside a caller's transaction, a
    # savepoint keeps that transaction usable after a duplicate.
    once = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    try:
        with once:
            event = WebhookEvent.objects.create(
                provider=provider,
                event_id=event_id[:200],
                event_type=event_type[:64],
                resource_ref=resource_ref[:128],
                body=body,
            )
            transaction.on_commit(lambda: _enqueue(event.pk))  # at once in autocommit
    except IntegrityError:
        log.info("webhook_duplicate", provider=provider, event_id=event_id)
        metrics.webhook_event(provider, "duplicate")
        return None, False
    metrics.webhook_event(provider, "stored")
    log.info("webhook_stored", provider=provider, event_id=event_id, event_type=event_type)
    return event, True


def _enqueue(pk: int) -> None:
    from kombu.exceptions import OperationalError

    from integrations.tasks import process_webhook_event

    try:
        process_webhook_event.delay(pk)
    except OperationalError as exc:  # the beat sweep picks it up
        log.warning("webhook_not_enqueued", webhook_event=pk, error=str(exc))


def webhook_event_process(pk: int) -> str:
    """Process one stored event exactly once; safe to call concurrently and repeatedly."""
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if event is None:
            return "locked-or-missing"
        if event.status not in (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.FAILED):
            return event.status
        handler = _HANDLERS.get(event.provider)
        if handler is None:
            raise RuntimeError(f"no webhook handler registered for {event.provider}")
        event.attempts += 1
        try:
            with transaction.atomic():
                result = handler(event)
        except RetryableWebhookError as exc:
            event.status = WebhookEvent.Status.FAILED
            event.last_error = str(exc)[:2000]
            if event.attempts >= MAX_PROCESSING_ATTEMPTS:
                event.status = WebhookEvent.Status.UNMATCHED
                event.last_error = f"gave up after {event.attempts} attempts: {exc}"[:2000]
            event.save(update_fields=["status", "last_error", "attempts"])
            log.warning("webhook_retry_later", webhook_event=pk, error=str(exc))
            return event.status
        event.status = result.status
        event.payment_id = result.payment_id or event.payment_id
        event.practice_id = result.practice_id or event.practice_id
        event.last_error = result.note[:2000]
        event.processed_at = timezone.now()
        event.save(
            update_fields=[
                "status",
                "payment_id",
                "practice_id",
                "last_error",
                "processed_at",
                "attempts",
            ]
        )
    log.info("webhook_processed", webhook_event=pk, provider=event.provider, status=event.status)
    return event.status


def webhook_events_due() -> list[int]:
    """Stored events still waiting (a lost task message, or a retryable failure)."""
    return list(
        WebhookEvent.objects.filter(
            status__in=[WebhookEvent.Status.RECEIVED, WebhookEvent.Status.FAILED]
        ).values_list("pk", flat=True)[:500]
    )
