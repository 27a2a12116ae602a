"""The one write path for subscription status records: register, apply an event, attach fees.

Every function is keyword-only and does, in one `transaction.atomic`: lock the
record, decide (subscriptions.lifecycle), change it, append the audit event
(`subscription.payment.status_changed`, always with the PaymentMandateRef) and
write the outbox rows (subscriptions.events), for payments and for mandates
that stop (failed, blocked, cancelled, expired). The webhook handler only
translates GoCardless events and calls these.

Records are created from what GoCardless's API says *now* (`registered_at` is
the moment we asked), so every event older than that look-up is already
reflected and changes nothing. None of these functions can cause a
collection: there is nothing to call for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from subscriptions import events
from subscriptions.fees import PayoutFees, to_money
from subscriptions.lifecycle import (
    MANDATE_ACTION_STATUS,
    MANDATE_STATUS_RANK,
    PAYMENT_ACTION_STATUS,
    PAYMENT_STATUS_RANK,
    mandate_state,
    payment_state,
    supersedes,
)
from subscriptions.locks import lock_mandate, lock_payment
from subscriptions.models import SubscriptionMandate, SubscriptionPayment
from subscriptions.provider_events import GoCardlessEvent

log = structlog.get_logger("subscriptions")

GOCARDLESS = Actor.provider("gocardless")


class SubscriptionRecordMissing(LookupError):
    """No record for this GoCardless id: register it first (the handler resolves it)."""


@dataclass(frozen=True)
class MandateIdentity:
    """A mandate as GoCardless's API and its metadata describe it."""

    gocardless_mandate_id: str
    mandate_reference: str
    gocardless_status: str
    practice_id: object
    patient_id: object
    module: str
    site_id: object = None


@dataclass(frozen=True)
class PaymentIdentity:
    """A payment as GoCardless's API and its metadata describe it."""

    gocardless_payment_id: str
    gocardless_mandate_id: str
    gocardless_status: str
    amount: Decimal
    currency: str
    subscription_id: str
    gocardless_subscription_id: str = ""
    charge_date: date | None = None
    payout_id: str = ""
    site_id: object = None


@dataclass(frozen=True)
class Outcome:
    """What a service did: the record as it now is, and whether its status changed."""

    record: SubscriptionPayment | SubscriptionMandate
    changed: bool
    note: str = ""


# --- audit -------------------------------------------------------------------------------------


def _audit_payment(
    payment: SubscriptionPayment,
    *,
    actor: Actor,
    from_state: str,
    from_status: str,
    event: GoCardlessEvent | None,
    change: str,
    extra: dict | None = None,
) -> None:
    audit_record(
        event_type=EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED,
        practice_id=payment.practice_id,
        actor=actor,
        site_id=payment.site_id,
        subject_type="subscription_payment",
        subject_id=str(payment.id),
        amount=payment.amount,
        currency=payment.currency,
        method="direct_debit",
        target_type="subscription",
        target_id=payment.subscription_id[:64],
        provider_reference=payment.gocardless_payment_id,
        from_state=from_state,
        to_state=payment.state,
        reason_code=(event.reason_code or event.cause)[:32] if event else "",
        mandate_reference=payment.mandate_reference,
        payload={
            "change": change,
            "subscription_module": payment.module,
            "patient_id": str(payment.patient_id),
            "gocardless_status_from": from_status or None,
            "gocardless_status_to": payment.gocardless_status,
            "gocardless_mandate_id": payment.mandate.gocardless_mandate_id,
            "gocardless_event_id": event.id if event else None,
            "gocardless_event": event.kind if event else None,
            "event_created_at": event.created_at.isoformat() if event else None,
            "details": event.details() if event else None,
            **(extra or {}),
        },
    )


def _audit_mandate(
    mandate: SubscriptionMandate,
    *,
    actor: Actor,
    from_state: str,
    from_status: str,
    event: GoCardlessEvent | None,
    change: str,
) -> None:
    audit_record(
        event_type=EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED,
        practice_id=mandate.practice_id,
        actor=actor,
        site_id=mandate.site_id,
        subject_type="subscription_mandate",
        subject_id=str(mandate.id),
        method="direct_debit",
        provider_reference=mandate.gocardless_mandate_id,
        from_state=from_state,
        to_state=mandate.state,
        reason_code=(event.reason_code or event.cause)[:32] if event else "",
        mandate_reference=mandate.mandate_reference,
        payload={
            "change": change,
            "subscription_module": mandate.module,
            "patient_id": str(mandate.patient_id),
            "gocardless_status_from": from_status or None,
            "gocardless_status_to": mandate.gocardless_status,
            "gocardless_event_id": event.id if event else None,
            "gocardless_event": event.kind if event else None,
            "event_created_at": event.created_at.isoformat() if event else None,
            "details": event.details() if event else None,
        },
    )


# --- mandates ----------------------------------------------------------------------------------


@transaction.atomic
def subscription_mandate_register(
    *,
    identity: MandateIdentity,
    registered_at: datetime,
    actor: Actor = GOCARDLESS,
    event: GoCardlessEvent | None = None,
) -> tuple[SubscriptionMandate, bool]:
    """Record a mandate GoCardless told us about; (record, created). An existing one is unchanged.

    The mandate reference is GoCardless's, copied here once and never changed.
    """
    existing = lock_mandate(identity.gocardless_mandate_id)
    if existing is not None:
        return existing, False
    if not identity.mandate_reference:
        raise ValueError("GoCardless gave this mandate no reference: it cannot be surfaced.")
    mandate = SubscriptionMandate(
        practice_id=identity.practice_id,
        site_id=identity.site_id,
        patient_id=identity.patient_id,
        module=identity.module,
        gocardless_mandate_id=identity.gocardless_mandate_id,
        mandate_reference=identity.mandate_reference,
        gocardless_status=identity.gocardless_status,
        state=mandate_state(identity.gocardless_status),
        last_event_id=event.id if event else "",
        last_event_created_at=registered_at,
    )
    try:
        with transaction.atomic():
            mandate.save(force_insert=True)
    except IntegrityError:  # registered concurrently by another event of the same mandate
        return lock_mandate(identity.gocardless_mandate_id), False
    _audit_mandate(
        mandate, actor=actor, from_state="", from_status="", event=event, change="registered"
    )
    if event is not None:  # first heard of through this event: its signals are due now
        events.on_mandate_status_changed(mandate, from_status="", event=event)
    return mandate, True


@transaction.atomic
def subscription_mandate_apply_event(
    *, event: GoCardlessEvent, actor: Actor = GOCARDLESS
) -> Outcome:
    """Apply a `mandates` event, unless an event at least as recent already decided its status."""
    mandate = lock_mandate(event.link("mandate"))
    if mandate is None:
        raise SubscriptionRecordMissing(event.link("mandate"))
    new_status = MANDATE_ACTION_STATUS[event.action]
    if not supersedes(
        current_status=mandate.gocardless_status,
        current_at=mandate.last_event_created_at,
        new_status=new_status,
        new_at=event.created_at,
        ranks=MANDATE_STATUS_RANK,
    ):
        _advance_clock(mandate, event, new_status)
        return Outcome(mandate, False, _why_not(mandate.gocardless_status, new_status))
    from_state, from_status = mandate.state, mandate.gocardless_status
    mandate.gocardless_status = new_status
    mandate.state = mandate_state(new_status)
    mandate.last_event_id = event.id
    mandate.last_event_created_at = event.created_at
    mandate.save(
        update_fields=[
            "gocardless_status",
            "state",
            "last_event_id",
            "last_event_created_at",
            "updated_at",
        ]
    )
    _audit_mandate(
        mandate,
        actor=actor,
        from_state=from_state,
        from_status=from_status,
        event=event,
        change="status",
    )
    events.on_mandate_status_changed(mandate, from_status=from_status, event=event)
    return Outcome(mandate, True)


# --- payments ----------------------------------------------------------------------------------


@transaction.atomic
def subscription_payment_register(
    *,
    identity: PaymentIdentity,
    registered_at: datetime,
    event: GoCardlessEvent,
    actor: Actor = GOCARDLESS,
) -> tuple[SubscriptionPayment, bool]:
    """Record a payment GoCardless told us about, in the status its API gives now; signals follow.

    Its mandate must be registered first; patient, module and mandate reference
    come from there. Returns (record, created); an existing record is unchanged.
    """
    mandate = lock_mandate(identity.gocardless_mandate_id)
    if mandate is None:
        raise SubscriptionRecordMissing(identity.gocardless_mandate_id)
    existing = lock_payment(identity.gocardless_payment_id)
    if existing is not None:
        return existing, False
    status = identity.gocardless_status
    if status not in PAYMENT_STATUS_RANK:
        raise ValueError(f"Unknown GoCardless payment status {status!r}.")
    payment = SubscriptionPayment(
        practice_id=mandate.practice_id,
        site_id=identity.site_id or mandate.site_id,
        patient_id=mandate.patient_id,
        mandate=mandate,
        module=mandate.module,
        subscription_id=identity.subscription_id,
        gocardless_subscription_id=identity.gocardless_subscription_id,
        gocardless_payment_id=identity.gocardless_payment_id,
        mandate_reference=mandate.mandate_reference,
        amount=identity.amount,
        currency=identity.currency,
        charge_date=identity.charge_date,
        gocardless_status=status,
        state=payment_state(status),
        last_event_id=event.id,
        last_event_created_at=registered_at,
        payout_id=identity.payout_id,
    )
    _note_failure(payment, event)
    try:
        with transaction.atomic():
            payment.save(force_insert=True)
    except IntegrityError:  # registered concurrently by another event of the same payment
        return lock_payment(identity.gocardless_payment_id), False
    _audit_payment(
        payment, actor=actor, from_state="", from_status="", event=event, change="registered"
    )
    events.on_state_changed(payment, from_state="", event=event)
    return payment, True


@transaction.atomic
def subscription_payment_apply_event(
    *, event: GoCardlessEvent, actor: Actor = GOCARDLESS
) -> Outcome:
    """Apply a `payments` event, unless an event at least as recent already decided its status.

    A change is audited with the mandate reference and writes its signals; a
    stale or repeated event changes nothing and writes nothing.
    """
    payment = lock_payment(event.link("payment"))
    if payment is None:
        raise SubscriptionRecordMissing(event.link("payment"))
    new_status = PAYMENT_ACTION_STATUS[event.action]
    if event.link("payout") and not payment.payout_id:
        payment.payout_id = event.link("payout")
        payment.save(update_fields=["payout_id", "updated_at"])
    if not supersedes(
        current_status=payment.gocardless_status,
        current_at=payment.last_event_created_at,
        new_status=new_status,
        new_at=event.created_at,
        ranks=PAYMENT_STATUS_RANK,
    ):
        _advance_clock(payment, event, new_status)
        return Outcome(payment, False, _why_not(payment.gocardless_status, new_status))
    from_state, from_status = payment.state, payment.gocardless_status
    payment.gocardless_status = new_status
    payment.state = payment_state(new_status)
    payment.last_event_id = event.id
    payment.last_event_created_at = event.created_at
    _note_failure(payment, event)
    payment.save(
        update_fields=[
            "gocardless_status",
            "state",
            "last_event_id",
            "last_event_created_at",
            "failure_cause",
            "failure_reason_code",
            "failure_description",
            "updated_at",
        ]
    )
    _audit_payment(
        payment,
        actor=actor,
        from_state=from_state,
        from_status=from_status,
        event=event,
        change="status",
    )
    events.on_state_changed(payment, from_state=from_state, event=event)
    if events.queue_pms_writeback(payment):  # fees arrived before the paid status did
        payment.save(update_fields=["pms_writeback_queued_at", "updated_at"])
    return Outcome(payment, True)


@transaction.atomic
def subscription_payment_attach_fees(
    *, gocardless_payment_id: str, fees: PayoutFees, actor: Actor = GOCARDLESS
) -> Outcome:
    """Store the fees a payout took for this payment, then queue its PMS writeback (once).

    Fees are recorded once per payment; a second payout look-up changes nothing.
    """
    payment = lock_payment(gocardless_payment_id)
    if payment is None:
        raise SubscriptionRecordMissing(gocardless_payment_id)
    if payment.has_fees:
        return Outcome(payment, False, "fees already recorded")
    if not fees.includes_payment:
        return Outcome(payment, False, f"payout {fees.payout_id} does not pay this payment")
    payment.payout_id = fees.payout_id
    payment.fee_currency = fees.currency
    payment.fee_gocardless = to_money(fees.gocardless_fee_minor)
    payment.fee_app = to_money(fees.app_fee_minor)
    payment.fee_surcharge = to_money(fees.surcharge_fee_minor)
    payment.fee_tax = to_money(fees.tax_minor)
    payment.fee_total = to_money(fees.total_minor)
    payment.fees_minor = fees.minor_units()
    payment.fees_recorded_at = timezone.now()
    queued = events.queue_pms_writeback(payment)
    payment.save(
        update_fields=[
            "payout_id",
            "fee_currency",
            "fee_gocardless",
            "fee_app",
            "fee_surcharge",
            "fee_tax",
            "fee_total",
            "fees_minor",
            "fees_recorded_at",
            "pms_writeback_queued_at",
            "updated_at",
        ]
    )
    _audit_payment(
        payment,
        actor=actor,
        from_state=payment.state,
        from_status=payment.gocardless_status,
        event=None,
        change="payout_fees",
        extra={"fees": events.fees_payload(payment), "pms_writeback_queued": queued},
    )
    return Outcome(payment, False, "fees recorded")


# --- helpers -----------------------------------------------------------------------------------


def _note_failure(payment: SubscriptionPayment, event: GoCardlessEvent) -> None:
    """Keep why the payment last failed (for the status view); cleared once it is not failed."""
    failed = payment.state == "failed"
    payment.failure_cause = event.cause if failed else ""
    payment.failure_reason_code = event.reason_code if failed else ""
    payment.failure_description = event.description if failed else ""


def _advance_clock(record, event: GoCardlessEvent, new_status: str) -> None:
    """A newer event confirming the current status still moves the record's clock on.

    Otherwise an event from between the two, arriving late, could be taken as the newest.
    """
    if new_status != record.gocardless_status:
        return
    if record.last_event_created_at is None or event.created_at > record.last_event_created_at:
        record.last_event_id = event.id
        record.last_event_created_at = event.created_at
        record.save(update_fields=["last_event_id", "last_event_created_at", "updated_at"])


def _why_not(current: str, new: str) -> str:
    if current == new:
        return f"already {current}"
    return f"stale: {new} does not supersede {current}"
