"""Recording a PMS writeback's outcome: the one write path after the relay called the PMS.

In one transaction: the outbox row's new status, the payments'
`pms_writeback_status`, and, when a money writeback cannot happen (the PMS
does not support it, refused it, or stayed down past the retries), a fallback
task for the Task Manager carrying the full detail and any GoCardless fee data,
plus a `pms_writeback.failed` audit event naming that task. Never a silent gap.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from integrations.models import Destination, OutboxMessage
from integrations.outbox import outbox_enqueue
from integrations.pms.adapters import (
    WritebackOutcome,
    WritebackResult,
    is_money_writeback,
    payment_ids,
    writeback_amount,
    writeback_kind,
)
from payments.locks import lock_payments
from payments.models import Payment, PmsWritebackStatus

log = structlog.get_logger("integrations.pms")

FALLBACK_TASK_TYPE = "pms_writeback_fallback"
RELAY_ACTOR = Actor.system("outbox_relay")
Status = OutboxMessage.Status


class Recorded(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FALLBACK = "fallback"  # dead or disabled, with a fallback task
    DEAD = "dead"
    DISABLED = "disabled"


def _set_payment_status(message: OutboxMessage, status: PmsWritebackStatus) -> list[str]:
    ids = payment_ids(message)
    payments = lock_payments(ids)
    if status == PmsWritebackStatus.WRITTEN:
        # Still pending while a later money writeback of the same payment waits.
        waiting = set(
            OutboxMessage.objects.filter(
                destination=Destination.PMS,
                payment_id__in=[p.pk for p in payments],
                status=Status.PENDING,
            )
            .exclude(pk=message.pk)
            .exclude(event_type="payment.pending")
            .values_list("payment_id", flat=True)
        )
        payments = [p for p in payments if p.pk not in waiting]
    Payment.objects.filter(pk__in=[p.pk for p in payments]).update(
        pms_writeback_status=status, updated_at=timezone.now()
    )
    return [str(p.pk) for p in payments]


def _money(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value is not None else None
    except InvalidOperation:
        return None


def fallback_task_key(message_id) -> str:
    """The de-duplication key of a writeback's fallback task: one task per writeback."""
    return f"task:pms_fallback:{message_id}"


def fallen_back(message_ids) -> set:
    """The writebacks among these whose fallback task exists: staff record those by hand.

    Such a row is never sent to the PMS again: the task may already have been
    done, and a second, automatic entry would count the money twice.
    """
    keys = {fallback_task_key(pk): pk for pk in message_ids}
    found = OutboxMessage.objects.filter(dedupe_key__in=list(keys)).values_list(
        "dedupe_key", flat=True
    )
    return {keys[key] for key in found}


def _create_fallback(message: OutboxMessage, reason: str) -> tuple[OutboxMessage, bool]:
    """The Task Manager task for doing this writeback by hand; one per writeback message."""
    payload = message.payload
    amount = writeback_amount(payload)
    currency = payload.get("currency") or ""
    kind = writeback_kind(message.event_type)
    target = payload.get("billable_target") or {}
    dedupe_key = fallback_task_key(message.pk)
    task = outbox_enqueue(
        destination=Destination.TASK_MANAGER,
        event_type="task.create",
        practice_id=message.practice_id,
        payment_id=message.payment_id,
        payload={
            "task_type": FALLBACK_TASK_TYPE,
            "title": f"Record the {kind} of {currency} {amount} in the PMS by hand",
            "detail": reason,
            "writeback_event_id": str(message.pk),
            "writeback_event_type": message.event_type,
            "writeback_kind": kind,
            "invoice_ref": target.get("pms_invoice_ref"),
            "amount": amount,
            "currency": currency,
            "payment_ids": payment_ids(message),
            "fees": payload.get("fees"),
            "writeback": payload,
        },
        dedupe_key=dedupe_key,
    )
    if task is not None:
        return task, True
    return OutboxMessage.objects.get(dedupe_key=dedupe_key), False


@transaction.atomic
def pms_writeback_record_outcome(
    *, message_id, lease_until: datetime, result: WritebackResult, retry_at: datetime
) -> Recorded | None:
    """Apply what the PMS adapter reported. None when our lease on the row was lost."""
    message = (
        OutboxMessage.objects.select_for_update()
        .filter(pk=message_id, status=Status.PENDING, next_attempt_at=lease_until)
        .first()
    )
    if message is None:
        return None
    now = timezone.now()
    attempts = message.attempts + (1 if result.attempted else 0)
    money = is_money_writeback(message.event_type)

    if result.outcome == WritebackOutcome.WRITTEN:
        message.status = Status.DELIVERED
        message.delivered_at = now
        message.attempts = attempts
        message.last_error = ""
        message.save(update_fields=["status", "delivered_at", "attempts", "last_error"])
        if money:
            _set_payment_status(message, PmsWritebackStatus.WRITTEN)
        return Recorded.DELIVERED

    exhausted = attempts >= settings.OUTBOX_MAX_ATTEMPTS
    if result.outcome == WritebackOutcome.RETRY and not exhausted:
        message.attempts = attempts
        message.next_attempt_at = retry_at
        message.last_error = result.detail[:2000]
        message.save(update_fields=["attempts", "next_attempt_at", "last_error"])
        return Recorded.RETRY

    if result.outcome == WritebackOutcome.RETRY:
        reason = f"PMS writeback failed after {attempts} attempts: {result.detail}"
    elif result.outcome == WritebackOutcome.REJECTED:
        reason = f"The PMS rejected the writeback: {result.detail}"
    else:
        reason = result.detail
    parked = result.outcome in (WritebackOutcome.UNSUPPORTED, WritebackOutcome.REFUSED)
    message.status = Status.DISABLED if parked else Status.DEAD
    message.attempts = attempts

    if not money or result.outcome == WritebackOutcome.REFUSED:
        # A marker, or something our records say must not be written: nothing to reconcile.
        message.last_error = reason[:2000]
        message.save(update_fields=["status", "attempts", "last_error"])
        log.warning(
            "pms_writeback_not_written",
            event_id=str(message.pk),
            event_type=message.event_type,
            reason=reason[:300],
        )
        return Recorded.DISABLED if parked else Recorded.DEAD

    task, created = _create_fallback(message, reason)
    message.last_error = f"{reason} Fallback task {task.pk} {'created' if created else 'exists'}."[
        :2000
    ]
    message.save(update_fields=["status", "attempts", "last_error"])
    covered = _set_payment_status(message, PmsWritebackStatus.FALLBACK)
    payload = message.payload
    audit_record(
        event_type=EventType.PMS_WRITEBACK_FAILED,
        practice_id=message.practice_id,
        actor=RELAY_ACTOR,
        site_id=payload.get("site_id"),
        payment_id=message.payment_id,
        subject_type="outbox_message",
        subject_id=str(message.pk),
        amount=_money(writeback_amount(payload)),
        currency=payload.get("currency") or "",
        method=payload.get("method") or "",
        target_type=(payload.get("billable_target") or {}).get("type") or "",
        target_id=(payload.get("billable_target") or {}).get("id") or "",
        provider_reference=payload.get("provider_reference") or "",
        payload={
            "fallback_task_id": str(task.pk),
            "fallback_task_created": created,
            "reason": reason[:500],
            "writeback_event_type": message.event_type,
            "attempts": attempts,
            "payment_ids": covered,
            "fees": payload.get("fees"),
        },
    )
    log.error(
        "pms_writeback_failed",
        event_id=str(message.pk),
        event_type=message.event_type,
        practice_id=str(message.practice_id),
        fallback_task_id=str(task.pk),
        reason=reason[:300],
    )
    return Recorded.FALLBACK
