r"""Deposits Appointment Manager asks us to collect (product page §6): the one write path.

Appointment Manager owns the policy (which appointments need a deposit, how
much, what a no-show costs). We collect the deposit, keep its status visible
and handle the exceptions:

    requested --capture--> paid --attended--> converted
        |                   |  \--no-show--> forfeited
        |                   \--full refund--> refunded   (also from converted / forfeited)
        \--waive--> waived

Staff with `manage_exceptions` waive or override (a converted/forfeited
decision, with a reason); staff with `issue_refund` refund. Every change is
audited; converted and forfeited are Financial Signals to Financial Insights.
Rows are locked payment first, then deposit, like the rest of the payment path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from payments import events, flows, links, services
from payments.errors import InvalidTransition, NotFound, PaymentError
from payments.locks import lock_payment
from payments.models import (
    PAID_STATES,
    Deposit,
    DepositStatus,
    Payment,
    PaymentLink,
    PaymentState,
    ReasonCode,
    TargetType,
)
from payments.permissions import authorise
from practices import access
from practices.models import Patient, Practice, Site
from practices.roles import Perm

D = DepositStatus

ATTENDED = "attended"
NO_SHOW = "no_show"
ATTENDANCE_OUTCOMES = {ATTENDED: D.CONVERTED, NO_SHOW: D.FORFEITED}
# Where staff may move a deposit by override: a settlement decision, made or corrected.
OVERRIDE_TARGETS = frozenset({D.CONVERTED, D.FORFEITED})
OVERRIDE_SOURCES = frozenset({D.PAID, D.CONVERTED, D.FORFEITED})
SETTLED = frozenset({D.CONVERTED, D.FORFEITED})


@dataclass(frozen=True)
class DepositOutcome:
    deposit: Deposit
    changed: bool


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise PaymentError("Give a reason.", code="reason_required", field="reason")
    if len(reason) > 255:
        raise PaymentError("Keep the reason under 255 characters.", code="invalid_reason")
    return reason


def _collection_payments(practice_id, deposit_id):
    """Every payment collecting this deposit: the first, and any retry a link made since."""
    return Payment.objects.filter(
        practice_id=practice_id, target_type=TargetType.DEPOSIT, target_id=str(deposit_id)
    ).order_by("-created_at")


def _lock(deposit_id) -> tuple[Payment | None, Deposit]:
    """Lock the deposit's current payment, then the deposit (the payment path's order)."""
    try:
        practice_id = Deposit.objects.values_list("practice_id", flat=True).get(pk=deposit_id)
    except (Deposit.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No such deposit.") from None
    payment_id = _collection_payments(practice_id, deposit_id).values_list("pk", flat=True).first()
    payment = lock_payment(payment_id) if payment_id else None
    deposit = Deposit.objects.select_for_update().get(pk=deposit_id)
    if payment is not None and deposit.payment_id != payment.id:
        deposit.payment = payment
        deposit.save(update_fields=["payment", "updated_at"])
    return payment, deposit


def _require_staff(actor: Actor, perm: Perm, deposit: Deposit) -> None:
    authorise(actor, perm, deposit, refusal="Only staff handle deposit exceptions.", also=())


def _audit(
    deposit: Deposit,
    actor: Actor,
    from_status: str,
    *,
    event_type=EventType.DEPOSIT_STATUS_CHANGED,
    **payload,
) -> None:
    audit_record(
        event_type=event_type,
        practice_id=deposit.practice_id,
        actor=actor,
        site_id=deposit.site_id,
        payment_id=deposit.payment_id,
        subject_type="deposit",
        subject_id=str(deposit.id),
        amount=deposit.amount,
        currency=deposit.currency,
        target_type=TargetType.DEPOSIT,
        target_id=str(deposit.id),
        from_state=from_status,
        to_state=deposit.status,
        payload={"appointment_id": deposit.appointment_id, **payload},
    )


def _move(deposit: Deposit, status: str, *, reason: str = "", now=None) -> str:
    from_status = deposit.status
    deposit.status = status
    deposit.status_reason = reason[:255]
    now = now or timezone.now()
    if status == D.PAID:
        deposit.paid_at = now
    elif status != D.REQUESTED:
        deposit.closed_at = now
    deposit.save(update_fields=["status", "status_reason", "paid_at", "closed_at", "updated_at"])
    return from_status


# --- Requested by Appointment Manager ------------------------------------------


@transaction.atomic
def deposit_request(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    appointment_id: str,
    amount,
    due_at=None,
    channel: str = "",
) -> Deposit:
    """Record the deposit Appointment Manager asks for and open its collection payment.

    The collection is a one-time pay-by-link (`payments.flows.pay_by_link_issue`),
    sent through Communication Hub on the channel asked for. One deposit per
    appointment.
    """
    if actor.kind != "system":
        raise PaymentError(
            "Deposits are requested by Appointment Manager.", code="permission_denied"
        )
    amount = services.money(amount)
    if not appointment_id or len(appointment_id) > 64:
        raise PaymentError(
            "The appointment reference is required.",
            code="invalid_reference",
            field="appointment_id",
        )
    if site.practice_id != practice.id or patient.practice_id != practice.id:
        raise NotFound("No such site or patient.")
    existing = Deposit.objects.filter(practice=practice, appointment_id=appointment_id).first()
    if existing is not None:
        raise InvalidTransition(
            f"A deposit was already requested for appointment {appointment_id} ({existing.status}).",
        )
    deposit = Deposit.objects.create(
        practice=practice,
        site=site,
        patient=patient,
        appointment_id=appointment_id,
        amount=amount,
        currency=practice.currency,
        due_at=due_at,
        channel=channel[:16],
        requested_by_label=actor.label,
    )
    issued = flows.pay_by_link_issue(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.DEPOSIT,
        target_id=str(deposit.id),
        amount=amount,
        channel=channel or PaymentLink.Channel.APP,
        due_at=due_at,
    )
    payment = issued.link.payment
    deposit.payment = payment
    deposit.save(update_fields=["payment", "updated_at"])
    _audit(deposit, actor, "", due_at=due_at.isoformat() if due_at else None, channel=channel)
    return deposit


def deposit_sync_from_payment(*, payment: Payment, actor: Actor) -> None:
    """Called inside the payment's transaction: paid on capture, refunded on a full refund."""
    try:
        deposit_id = uuid.UUID(payment.target_id)
    except ValueError:
        return  # a deposit target that is not one of ours (e.g. a proposal's deposit)
    deposit = (
        Deposit.objects.select_for_update()
        .filter(pk=deposit_id, practice_id=payment.practice_id)
        .first()
    )
    if deposit is None:
        return
    if deposit.payment_id != payment.id:
        deposit.payment = payment
        deposit.save(update_fields=["payment", "updated_at"])
    if payment.state == PaymentState.REFUNDED and deposit.status in (D.PAID, *SETTLED):
        from_status = _move(deposit, D.REFUNDED)
        _audit(deposit, actor, from_status, refunded_total=str(payment.refunded_amount))
    elif payment.state in PAID_STATES and deposit.status == D.REQUESTED:
        from_status = _move(deposit, D.PAID)
        _audit(deposit, actor, from_status, captured_amount=str(payment.captured_amount))


@transaction.atomic
def deposit_record_attendance(
    *, actor: Actor, practice: Practice, appointment_id: str, outcome: str
) -> DepositOutcome:
    """Appointment Manager reports the appointment: a paid deposit is converted or forfeited.

    A repeated report changes nothing; a contradicting one is refused (staff
    correct a decision by override). An unpaid, waived or refunded deposit has
    nothing to convert or forfeit.
    """
    if outcome not in ATTENDANCE_OUTCOMES:
        raise PaymentError(
            "The outcome is attended or no_show.", code="invalid_outcome", field="outcome"
        )
    deposit_id = (
        Deposit.objects.filter(practice=practice, appointment_id=appointment_id)
        .values_list("pk", flat=True)
        .first()
    )
    if deposit_id is None:
        raise NotFound(f"No deposit was requested for appointment {appointment_id}.")
    _payment, deposit = _lock(deposit_id)
    target = ATTENDANCE_OUTCOMES[outcome]
    if deposit.status == target:
        return DepositOutcome(deposit, changed=False)
    if deposit.status != D.PAID:
        raise InvalidTransition(
            f"The deposit is {deposit.get_status_display().lower()}: "
            "only a paid deposit is converted or forfeited.",
        )
    deposit.attendance_outcome = outcome
    deposit.save(update_fields=["attendance_outcome"])
    from_status = _move(deposit, target, reason=f"appointment {outcome}")
    _audit(deposit, actor, from_status, attendance_outcome=outcome)
    events.on_deposit_settled(deposit)
    return DepositOutcome(deposit, changed=True)


# --- Staff exceptions ----------------------------------------------------------


@transaction.atomic
def deposit_waive(*, deposit_id, actor: Actor, reason: str) -> Deposit:
    """Staff decide the deposit is not to be collected; its open payment is voided."""
    payment, deposit = _lock(deposit_id)
    _require_staff(actor, Perm.MANAGE_EXCEPTIONS, deposit)
    reason = _reason(reason)
    if deposit.status != D.REQUESTED:
        raise InvalidTransition(
            f"Only a requested deposit can be waived; this one is {deposit.status}."
            + (" Refund it instead." if deposit.status == D.PAID else "")
        )
    if payment is not None and payment.state in PAID_STATES:
        raise InvalidTransition("The deposit has just been paid; refund it instead.")
    if payment is not None and payment.state not in (PaymentState.VOIDED, PaymentState.FAILED):
        services.payment_void(
            payment_id=payment.id,
            actor=actor,
            reason_code=ReasonCode.OTHER,
            notes=f"Deposit waived: {reason}",
        )
    for link in PaymentLink.objects.filter(
        payment__in=_collection_payments(deposit.practice_id, deposit.id),
        status=PaymentLink.Status.ACTIVE,
    ):
        links.payment_link_cancel(link_id=link.id, actor=Actor.system("deposit_waiver"))
    from_status = _move(deposit, D.WAIVED, reason=reason)
    _audit(deposit, actor, from_status, reason=reason)
    return deposit


@transaction.atomic
def deposit_refund(
    *, deposit_id, actor: Actor, reason: str, reason_code: str = "other"
) -> services.RefundResult:
    """Refund a collected deposit in full, by its original payment.

    The deposit becomes refunded when the refund succeeds (at once for cash,
    on the provider's confirmation for cards); above the practice threshold
    the refund first waits for an approver, as every refund does.
    """
    payment, deposit = _lock(deposit_id)
    _require_staff(actor, Perm.ISSUE_REFUND, deposit)
    reason = _reason(reason)
    if deposit.status not in (D.PAID, *SETTLED) or payment is None:
        raise InvalidTransition(
            f"Only a collected deposit can be refunded; this one is {deposit.status}."
        )
    result = services.refund_request(
        payment_id=payment.id, actor=actor, reason_code=reason_code, notes=reason
    )
    deposit.refresh_from_db()
    _audit(
        deposit,
        actor,
        deposit.status,
        event_type=EventType.DEPOSIT_REFUND_REQUESTED,
        reason=reason,
        reason_code=reason_code,
        refund_id=str(result.refund.id) if result.refund else None,
        approval_id=str(result.approval.id) if result.approval else None,
    )
    return result


@transaction.atomic
def deposit_override(*, deposit_id, actor: Actor, status: str, reason: str) -> Deposit:
    """Staff settle a paid deposit, or correct a settlement, against what was reported."""
    payment, deposit = _lock(deposit_id)
    _require_staff(actor, Perm.MANAGE_EXCEPTIONS, deposit)
    reason = _reason(reason)
    if status not in OVERRIDE_TARGETS:
        raise PaymentError(
            "A deposit can be overridden to converted or forfeited.",
            code="invalid_status",
            field="status",
        )
    if deposit.status not in OVERRIDE_SOURCES:
        raise InvalidTransition(f"A {deposit.status} deposit cannot be overridden.")
    if deposit.status == status:
        raise InvalidTransition(f"The deposit is already {status}.")
    from_status = _move(deposit, status, reason=reason)
    event = audit_record(
        event_type=EventType.OVERRIDE_APPLIED,
        practice_id=deposit.practice_id,
        actor=actor,
        site_id=deposit.site_id,
        payment_id=deposit.payment_id,
        subject_type="deposit",
        subject_id=str(deposit.id),
        amount=deposit.amount,
        currency=deposit.currency,
        target_type=TargetType.DEPOSIT,
        target_id=str(deposit.id),
        provider_reference=payment.provider_reference if payment else "",
        from_state=from_status,
        to_state=status,
        payload={"appointment_id": deposit.appointment_id, "reason": reason},
    )
    events.on_deposit_settled(deposit, override=True, discriminator=str(event.event_id))
    return deposit


# --- Reads -----------------------------------------------------------------------


def deposits_visible_to(user):
    """Deposits the staff user may see (practice and site), with their collection payment."""
    return access.scope(Deposit.objects.all(), user).select_related("patient", "site", "payment")
