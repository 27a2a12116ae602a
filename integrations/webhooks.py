"""The webhook pipeline shared by every provider: store once, answer fast, process in a task.

A receiver (one per provider, in `integrations/<provider>/webhooks.py` or the
app that owns the events) verifies the signature on the raw body *before*
parsing, then calls `webhook_event_store`. Processing happens in the
`process_webhook_event` task, which calls the handler registered for the
provider with `register_handler`. Handlers run inside a transaction holding a
lock on the event row, call the service layer, and return the event's new
status.

When processing fails the event is tried again later, never in a tight loop:
`next_attempt_at` backs off exponentially with full jitter
(WEBHOOK_BACKOFF_BASE_SECONDS doubling to WEBHOOK_BACKOFF_CAP_SECONDS).

- `RetryableWebhookError` (e.g. the provider's API is down) keeps the event
  retrying until WEBHOOK_RETRY_WINDOW_SECONDS after it arrived;
- any other error is a fault in the event or in our code: the handler's work is
  rolled back, the attempt is recorded, and after WEBHOOK_MAX_ERROR_ATTEMPTS
  attempts the event is given up on. One broken event never stops the others.

An event given up on is `parked`: listed in the admin (status filter) with a
Task Manager task for its practice, until a finance admin reprocesses it
(`webhook_event_reprocess`, audited).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from integrations.models import Destination, WebhookEvent
from integrations.outbox import outbox_enqueue
from practices import access
from practices.roles import Perm
from primoro_payments import metrics

log = structlog.get_logger("integrations.webhooks")

Status = WebhookEvent.Status
DUE_STATUSES = (Status.RECEIVED, Status.FAILED)
REPROCESSABLE = (Status.PARKED, Status.FAILED)
PARKED_TASK_TYPE = "webhook_event_parked"


class RetryableWebhookError(Exception):
    """Processing could not finish now (e.g. a provider look-up failed); try again later."""


@dataclass(frozen=True)
class HandlerResult:
    status: str  # one of WebhookEvent.Status
    payment_id: object = None
    practice_id: object = None
    note: str = ""


Handler = Callable[[WebhookEvent], HandlerResult]
PracticeResolver = Callable[[WebhookEvent], object]
_HANDLERS: dict[str, Handler] = {}
_PRACTICE_RESOLVERS: dict[str, PracticeResolver] = {}


def register_handler(
    provider: str, handler: Handler, *, practice_for: PracticeResolver | None = None
) -> None:
    """Called from an AppConfig.ready(): which function processes this provider's events.

    `practice_for(event)` names the practice of an event that never finished
    processing (from our own records only: the provider may be the thing that
    is down), so its parked task reaches the right practice.
    """
    _HANDLERS[provider] = handler
    if practice_for is not None:
        _PRACTICE_RESOLVERS[provider] = practice_for


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
        # No publish retries: with the broker down the provider's request must still be
        # answered promptly; the stored event waits for the beat sweep.
        process_webhook_event.apply_async((pk,), retry=False)
    except OperationalError as exc:  # the beat sweep picks it up
        log.warning("webhook_not_enqueued", webhook_event=pk, error=str(exc))


def webhook_event_process(pk: int, *, now: datetime | None = None) -> str:
    """Process one stored event exactly once; safe to call concurrently and repeatedly.

    A failure is recorded on the event (attempt, error, next attempt) and never
    raised: the caller may be a sweep with other events to process.
    """
    now = now or timezone.now()
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if event is None:
            return "locked-or-missing"
        if event.status not in DUE_STATUSES:
            return event.status
        event.attempts += 1
        try:
            handler = _HANDLERS[event.provider]
            with transaction.atomic():  # a savepoint: a failing handler leaves nothing behind
                result = handler(event)
        except RetryableWebhookError as exc:
            _record_failure(event, str(exc), now=now, retryable=True)
            return event.status
        except SoftTimeLimitExceeded:
            # The worker is out of time, not this event at fault: roll back and leave it
            # due (its attempt uncounted) for the next sweep.
            raise
        except Exception as exc:  # any fault: recorded on this event, the others go on
            log.exception(
                "webhook_processing_error",
                webhook_event=pk,
                provider=event.provider,
                event_id=event.event_id,
                error_type=type(exc).__name__,
                attempts=event.attempts,
            )
            _record_failure(event, f"{type(exc).__name__}: {exc}", now=now, retryable=False)
            return event.status
        event.status = result.status
        event.payment_id = result.payment_id or event.payment_id
        event.practice_id = result.practice_id or event.practice_id
        event.last_error = result.note[:2000]
        event.processed_at = timezone.now()
        event.next_attempt_at = None
        event.save(
            update_fields=[
                "status",
                "payment_id",
                "practice_id",
                "last_error",
                "processed_at",
                "attempts",
                "next_attempt_at",
            ]
        )
    log.info("webhook_processed", webhook_event=pk, provider=event.provider, status=event.status)
    return event.status


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: full jitter, hours at most."""
    from integrations.relay import backoff_delay

    return backoff_delay(
        attempts - 1,
        base=settings.WEBHOOK_BACKOFF_BASE_SECONDS,
        cap=settings.WEBHOOK_BACKOFF_CAP_SECONDS,
    )


def _record_failure(event: WebhookEvent, error: str, *, now: datetime, retryable: bool) -> None:
    """Schedule the next try, or park the event once retrying is pointless (caller holds the lock)."""
    if retryable:
        window = timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
        give_up = now >= event.received_at + window
    else:
        give_up = event.attempts >= settings.WEBHOOK_MAX_ERROR_ATTEMPTS
    if give_up:
        _park(event, error, now=now)
        return
    event.status = Status.FAILED
    event.last_error = error[:2000]
    event.next_attempt_at = now + timedelta(seconds=retry_delay(event.attempts))
    event.save(update_fields=["status", "last_error", "attempts", "next_attempt_at"])
    log.warning(
        "webhook_retry_later",
        webhook_event=event.pk,
        provider=event.provider,
        attempts=event.attempts,
        next_attempt_at=event.next_attempt_at.isoformat(),
        error=error[:300],
    )


def _park(event: WebhookEvent, error: str, *, now: datetime) -> None:
    """Give up: keep the event in view and give its practice a Task Manager task."""
    hours = (now - event.received_at).total_seconds() / 3600
    event.status = Status.PARKED
    event.next_attempt_at = None
    event.last_error = (f"Gave up after {event.attempts} attempt(s) over {hours:.1f} h: {error}")[
        :2000
    ]
    if event.practice_id is None:
        resolver = _PRACTICE_RESOLVERS.get(event.provider)
        event.practice_id = resolver(event) if resolver else None
    event.save(update_fields=["status", "last_error", "attempts", "next_attempt_at", "practice_id"])
    metrics.webhook_event(event.provider, "parked")
    log.error(
        "webhook_parked",
        webhook_event=event.pk,
        provider=event.provider,
        event_id=event.event_id,
        attempts=event.attempts,
        practice=str(event.practice_id) if event.practice_id else None,
    )
    if event.practice_id is None:
        return  # nobody's task to give: platform support sees it in the admin
    outbox_enqueue(
        destination=Destination.TASK_MANAGER,
        event_type="task.create",
        practice_id=event.practice_id,
        payment_id=event.payment_id,
        payload={
            "task_type": PARKED_TASK_TYPE,
            "title": f"{event.get_provider_display()} event {event.event_id} "
            "could not be processed",
            "detail": event.last_error,
            "provider": event.provider,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "resource_ref": event.resource_ref or None,
            "payment_id": str(event.payment_id) if event.payment_id else None,
            "attempts": event.attempts,
            "received_at": event.received_at.isoformat(),
            "note": "Fix the cause, then reprocess the event in the admin "
            "(Integrations › Provider webhook events).",
        },
    )


def webhook_events_due(*, now: datetime | None = None) -> list[int]:
    """Stored events waiting to be processed: never tried, or failed and due again."""
    now = now or timezone.now()
    return list(
        WebhookEvent.objects.filter(status__in=DUE_STATUSES)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by(F("next_attempt_at").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)[:500]
    )


def webhook_events_sweep(*, now: datetime | None = None) -> int:
    """Process due events; one that cannot be processed is recorded and the rest go on.

    Stops taking events once WEBHOOK_SWEEP_TIME_BUDGET_SECONDS (kept below the task's
    soft time limit) has passed, so a slow backlog ends the run cleanly rather than
    being killed mid-event; the next beat sweep goes on where this one stopped.
    Returns how many events it processed.
    """
    due = webhook_events_due(now=now)
    deadline = time.monotonic() + settings.WEBHOOK_SWEEP_TIME_BUDGET_SECONDS
    processed = 0
    for pk in due:
        if time.monotonic() >= deadline:
            log.warning("webhook_sweep_out_of_time", processed=processed, left=len(due) - processed)
            break
        processed += 1
        try:
            webhook_event_process(pk, now=now)
        except DatabaseError as exc:  # even recording the failure failed in its transaction
            log.error(
                "webhook_sweep_event_failed",
                webhook_event=pk,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
            if not _record_crash(pk, f"{type(exc).__name__}: {exc}", now=now or timezone.now()):
                break  # the database itself is unavailable: the next sweep starts again
    return processed


def _record_crash(pk: int, error: str, *, now: datetime) -> bool:
    """Count the attempt in a transaction of its own; False if the database refuses that too."""
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.select_for_update().filter(pk=pk).first()
            if event is None or event.status not in DUE_STATUSES:
                return True
            event.attempts += 1
            _record_failure(event, error, now=now, retryable=False)
    except DatabaseError as exc:
        log.error("webhook_attempt_not_recorded", webhook_event=pk, error=str(exc)[:300])
        return False
    return True


# --- Reprocessing (finance admins) ---------------------------------------------------


@transaction.atomic
def webhook_event_reprocess(*, event_ids, actor: Actor) -> int:
    """Try parked (or still failing) events again now: the admin's "Reprocess" action.

    Needs MANAGE_EXCEPTIONS at each event's practice; an event no practice is
    known for is platform support's (superusers). Audited per practice
    (`webhook_event.reprocessed`); an event with no practice has no audit chain
    to join and is logged instead. Attempts start again from zero. Returns how
    many events were queued.
    """
    if not actor.is_staff:
        raise access.NotPermitted(Perm.MANAGE_EXCEPTIONS, "Only staff can reprocess events.")
    rows = list(
        WebhookEvent.objects.select_for_update()
        .filter(pk__in=list(event_ids), status__in=REPROCESSABLE)
        .order_by("pk")
    )
    for practice_id in sorted({row.practice_id for row in rows if row.practice_id}, key=str):
        access.require(actor.user, Perm.MANAGE_EXCEPTIONS, practice_id=practice_id)
    if any(row.practice_id is None for row in rows) and not actor.user.is_superuser:
        raise access.NotPermitted(
            Perm.MANAGE_EXCEPTIONS,
            "Only platform support can reprocess events no practice is known for.",
        )
    now = timezone.now()
    by_practice: dict = {}
    for row in rows:
        by_practice.setdefault(row.practice_id, []).append(
            {
                "webhook_event": row.pk,
                "provider": row.provider,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "previous_status": row.status,
                "previous_attempts": row.attempts,
                "last_error": row.last_error[:300],
            }
        )
        row.status = Status.RECEIVED
        row.attempts = 0
        row.next_attempt_at = now
        row.last_error = f"Reprocess requested by {actor.label}. Before: {row.last_error}"[:2000]
        row.save(update_fields=["status", "attempts", "next_attempt_at", "last_error"])
        transaction.on_commit(lambda pk=row.pk: _enqueue(pk))
    for practice_id, events in by_practice.items():
        if practice_id is None:
            log.warning("webhook_events_reprocessed", actor=actor.label, events=events)
            continue
        audit_record(
            event_type=EventType.WEBHOOK_EVENT_REPROCESSED,
            practice_id=practice_id,
            actor=actor,
            subject_type="webhook_event",
            subject_id=str(events[0]["webhook_event"]) if len(events) == 1 else "",
            payload={"count": len(events), "events": events},
        )
    return len(rows)
