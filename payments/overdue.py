"""Overdue balances: requested payments still unpaid after their due date (product page §6).

A payment with a `due_at` (a deposit's collection, a staged instalment, a
payment request or link given a due date with `services.payment_set_due`)
that is still open when the date passes becomes an `OverdueBalance`, one per
billable target. `overdue_process` (Celery beat, hourly; or
`manage.py process_overdue_balances`) then, for each open balance:

- settles it when any payment on its target has been captured;
- closes it when the target has no open payment left (voided: the practice
  cancelled it; failed: the failure already raised its own task);
- otherwise sends a reminder through Communication Hub on each day of the
  practice's `overdue_reminder_days` after the due date (a run that missed
  some days sends one reminder, not a burst);
- and, once every reminder has gone and ESCALATE_AFTER_LAST_REMINDER has
  passed since the last, raises a Task Manager task and marks it escalated.

Each balance is handled in its own transaction, with its audit event and
outbox rows; running twice at the same moment sends nothing twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

import structlog
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from payments import events, services
from payments.errors import PaymentError
from payments.models import (
    OPEN_STATES,
    PAID_STATES,
    InitiatorKind,
    OverdueBalance,
    Payment,
    PaymentPurpose,
    PaymentState,
)
from practices.models import parse_reminder_days

log = structlog.get_logger("payments.overdue")

ACTOR = Actor.system("overdue_reminders")
SCHEDULE_ACTOR = Actor.system("payment_schedule")
ESCALATE_AFTER_LAST_REMINDER = timedelta(days=1)
DEFAULT_REMINDER_DAYS = [3, 7, 14]
Status = OverdueBalance.Status


@dataclass
class OverdueStats:
    instalments_started: int = 0
    opened: int = 0
    reminded: int = 0
    escalated: int = 0
    settled: int = 0
    closed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _reminder_days(practice) -> list[int]:
    try:
        return parse_reminder_days(practice.overdue_reminder_days)
    except ValidationError:
        log.warning("overdue_reminder_days_invalid", practice_id=str(practice.pk))
        return DEFAULT_REMINDER_DAYS


def _target_payments(balance: OverdueBalance):
    return Payment.objects.filter(
        practice_id=balance.practice_id,
        target_type=balance.target_type,
        target_id=balance.target_id,
    )


def _audit(balance: OverdueBalance, event_type, **payload) -> None:
    audit_record(
        event_type=event_type,
        practice_id=balance.practice_id,
        actor=ACTOR,
        site_id=balance.site_id,
        payment_id=balance.payment_id,
        subject_type="overdue_balance",
        subject_id=str(balance.id),
        amount=balance.amount,
        currency=balance.currency,
        target_type=balance.target_type,
        target_id=balance.target_id,
        payload={"due_at": balance.due_at.isoformat(), **payload},
    )


# --- Instalments that fall due ------------------------------------------------------


def instalments_start_due(*, now=None) -> int:
    """Start the system-scheduled payments (staged instalments) whose due date has come."""
    now = now or timezone.now()
    due = Payment.objects.filter(
        state=PaymentState.PROPOSED,
        due_at__lte=now,
        initiated_by_kind=InitiatorKind.SYSTEM,
        purpose=PaymentPurpose.PATIENT,
    ).order_by("due_at")
    started = 0
    for payment_id in due.values_list("id", flat=True):
        try:
            services.payment_initiate(payment_id=payment_id, actor=SCHEDULE_ACTOR)
        except PaymentError as exc:
            log.warning("instalment_not_started", payment_id=str(payment_id), error=exc.message)
            continue
        started += 1
    return started


# --- Finding new overdue balances ---------------------------------------------------


def _open_balance(payment: Payment, now) -> bool:
    """Create (or reopen) the overdue balance of this payment's target. True when opened."""
    balance = (
        OverdueBalance.objects.select_for_update()
        .filter(
            practice_id=payment.practice_id,
            target_type=payment.target_type,
            target_id=payment.target_id,
        )
        .first()
    )
    if balance is None:
        OverdueBalance.objects.create(
            practice_id=payment.practice_id,
            site_id=payment.site_id,
            patient_id=payment.patient_id,
            target_type=payment.target_type,
            target_id=payment.target_id,
            payment=payment,
            amount=payment.charge_amount,
            currency=payment.currency,
            due_at=payment.due_at,
        )
        return True
    reopen = balance.status in (Status.SETTLED, Status.CLOSED) and (
        balance.resolved_at is None or payment.created_at > balance.resolved_at
    )
    if not reopen:
        return False
    balance.status = Status.OPEN
    balance.payment = payment
    balance.amount = payment.charge_amount
    balance.due_at = payment.due_at
    balance.reminders_sent = 0
    balance.last_reminder_at = balance.escalated_at = balance.resolved_at = None
    balance.save()
    return True


def _newly_overdue(now):
    """Open payments past their due date whose unpaid target has no live balance yet."""
    same_target = {
        "practice_id": OuterRef("practice_id"),
        "target_type": OuterRef("target_type"),
        "target_id": OuterRef("target_id"),
    }
    live_balance = OverdueBalance.objects.filter(**same_target).filter(
        Q(status__in=[Status.OPEN, Status.ESCALATED]) | Q(resolved_at__gte=OuterRef("created_at"))
    )
    paid = Payment.objects.filter(**same_target, state__in=PAID_STATES)
    return (
        Payment.objects.filter(
            due_at__lt=now, state__in=OPEN_STATES, purpose=PaymentPurpose.PATIENT
        )
        .exclude(Exists(live_balance))
        .exclude(Exists(paid))
        .order_by("due_at")
    )


# --- Advancing one balance ------------------------------------------------------------


def _resolve(balance: OverdueBalance, status: str, now) -> None:
    balance.status = status
    balance.resolved_at = now
    balance.save(update_fields=["status", "resolved_at", "updated_at"])


def _advance(balance_id, now, stats: OverdueStats) -> None:
    balance = (
        OverdueBalance.objects.select_for_update()
        .select_related("practice")
        .filter(pk=balance_id, status=Status.OPEN)
        .first()
    )
    if balance is None:
        return
    payments = _target_payments(balance)
    if payments.filter(state__in=PAID_STATES).exists():
        _resolve(balance, Status.SETTLED, now)
        stats.settled += 1
        return
    latest_open = payments.filter(state__in=OPEN_STATES).order_by("-created_at").first()
    if latest_open is None:
        _resolve(balance, Status.CLOSED, now)
        stats.closed += 1
        return
    balance.payment = latest_open
    days = _reminder_days(balance.practice)
    days_overdue = (now - balance.due_at).days
    reached = sum(1 for day in days if days_overdue >= day)
    if reached > balance.reminders_sent:
        balance.reminders_sent = reached
        balance.last_reminder_at = now
        balance.save(update_fields=["payment", "reminders_sent", "last_reminder_at", "updated_at"])
        events.on_overdue_reminder(balance, number=reached, of=len(days), days_overdue=days_overdue)
        _audit(
            balance,
            EventType.BALANCE_OVERDUE_REMINDED,
            reminder_number=reached,
            reminders_scheduled=len(days),
            days_overdue=days_overdue,
        )
        stats.reminded += 1
    elif (
        balance.reminders_sent >= len(days)
        and balance.last_reminder_at is not None
        and now >= balance.last_reminder_at + ESCALATE_AFTER_LAST_REMINDER
    ):
        balance.status = Status.ESCALATED
        balance.escalated_at = now
        balance.save(update_fields=["payment", "status", "escalated_at", "updated_at"])
        events.on_overdue_escalated(balance, days_overdue=days_overdue)
        _audit(
            balance,
            EventType.BALANCE_OVERDUE_ESCALATED,
            reminders_sent=balance.reminders_sent,
            days_overdue=days_overdue,
        )
        stats.escalated += 1
    else:
        balance.save(update_fields=["payment", "updated_at"])


def overdue_process(*, now=None) -> OverdueStats:
    """One pass: start due instalments, open new overdue balances, remind, escalate."""
    now = now or timezone.now()
    stats = OverdueStats(instalments_started=instalments_start_due(now=now))
    for payment in _newly_overdue(now).iterator():
        with transaction.atomic():
            stats.opened += _open_balance(payment, now)
    for balance_id in OverdueBalance.objects.filter(status=Status.OPEN).values_list(
        "id", flat=True
    ):
        with transaction.atomic():
            _advance(balance_id, now, stats)
    log.info("overdue_processed", **stats.as_dict())
    return stats
