"""A patient's outstanding balances, receipts and payments, and paying a balance (§4.2, §5.3).

"Outstanding" is defined from our own records, not the PMS ledger: the PMS is
the record of invoices and accounts, we only know the payments the practice or
a platform module asked us to collect. A balance is one patient `Payment` of
this patient, not yet paid, that the patient can pay online now:

- a pay-by-link payment whose link is active and not past its expiry, in
  `initiated` or `awaiting_customer_action`, or `failed` (a declined attempt:
  the link stays payable with a new attempt). Requested deposits are collected
  this way, so they are balances of kind `deposit`;
- an online payment in `initiated` or `awaiting_customer_action` that the
  practice or a platform module started (one the patient started themselves is
  their own checkout, not a request).

Not balances: payments already authorised or paid; voided ones; an expired or
cancelled link (the patient asks the practice for a new one); card-on-file
instalments (charged to the saved card automatically); terminal, phone, cash
and voucher payments (taken in the practice). A balance's `due_at` is the
payment's due date (`services.payment_set_due`); past it, the balance is
overdue (payments.overdue reminds the patient).

Receipts are the patient's paid payments (captured, refunded in part or in
full, reconciled), with the rewards credit applied and their refunds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Prefetch, Q, QuerySet
from django.utils import timezone

from audit.actors import Actor
from payments import flows
from payments.errors import InvalidTransition, NotFound, PaymentError
from payments.links import CHECKOUT_CACHE_SECONDS, LinkUnavailable, _checkout_key
from payments.locks import lock_payment
from payments.models import (
    PAID_STATES,
    InitiatorKind,
    Payment,
    PaymentLink,
    PaymentMethod,
    PaymentPurpose,
    PaymentState,
    Refund,
    TargetType,
)
from practices.models import Patient

S = PaymentState
L = PaymentLink.Status
OPEN = (S.INITIATED, S.AWAITING_CUSTOMER_ACTION)
DESCRIPTIONS = {
    TargetType.INVOICE: "Invoice",
    TargetType.PATIENT_BALANCE: "Account balance",
    TargetType.DEPOSIT: "Appointment deposit",
    TargetType.PAYMENT_REQUEST: "Payment request",
    TargetType.COMMERCE_ORDER: "Order",
}


def balance_condition(now: datetime) -> Q:
    """The payments that are outstanding balances at `now` (the rules above)."""
    link_active = Q(link__status=L.ACTIVE, link__expires_at__gt=now)
    by_link = Q(method=PaymentMethod.PAY_BY_LINK, state__in=[*OPEN, S.FAILED]) & link_active
    online = Q(method=PaymentMethod.ONLINE, state__in=OPEN) & ~Q(
        initiated_by_kind=InitiatorKind.PATIENT
    )
    return by_link | online


def _own(patient: Patient) -> QuerySet[Payment]:
    return Payment.objects.filter(
        patient=patient, practice_id=patient.practice_id, purpose=PaymentPurpose.PATIENT
    )


@dataclass(frozen=True)
class Balance:
    payment: Payment
    now: datetime

    @property
    def id(self):
        return self.payment.id

    @property
    def kind(self) -> str:
        return self.payment.target_type

    @property
    def description(self) -> str:
        label = DESCRIPTIONS.get(self.payment.target_type, "Payment")
        ref = self.payment.pms_invoice_ref
        return f"{label} {ref}" if ref else label

    @property
    def link(self) -> PaymentLink | None:
        return getattr(self.payment, "link", None)

    @property
    def overdue(self) -> bool:
        return self.payment.due_at is not None and self.payment.due_at <= self.now

    @property
    def last_attempt_failed(self) -> bool:
        return self.payment.state == S.FAILED


def balances_for(patient: Patient, *, now: datetime | None = None) -> list[Balance]:
    """The patient's outstanding balances, soonest due first (then oldest)."""
    now = now or timezone.now()
    payments = (
        _own(patient)
        .filter(balance_condition(now))
        .select_related("practice", "link")
        .order_by(F("due_at").asc(nulls_last=True), "created_at", "id")
    )
    return [Balance(payment, now) for payment in payments]


def balance_get(patient: Patient, balance_id, *, now: datetime | None = None) -> Balance:
    now = now or timezone.now()
    try:
        payment = (
            _own(patient)
            .filter(balance_condition(now))
            .select_related("practice", "link")
            .get(pk=balance_id)
        )
    except (Payment.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No such balance.") from None
    return Balance(payment, now)


def receipts_for(patient: Patient) -> QuerySet[Payment]:
    """The patient's paid payments, newest first, with their refunds (failed ones left out)."""
    return (
        _own(patient)
        .filter(state__in=PAID_STATES)
        .select_related("practice")
        .prefetch_related(
            Prefetch(
                "refunds",
                queryset=Refund.objects.exclude(status=Refund.Status.FAILED).order_by("created_at"),
            )
        )
    )


def receipt_get(patient: Patient, payment_id) -> Payment:
    try:
        return receipts_for(patient).get(pk=payment_id)
    except (Payment.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No such receipt.") from None


def patient_payment_get(patient: Patient, payment_id) -> Payment:
    """Any payment of the patient's (to follow a checkout); nobody else's, ever."""
    try:
        return _own(patient).select_related("practice").get(pk=payment_id)
    except (Payment.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No such payment.") from None


# --- paying a balance ------------------------------------------------------------------


@dataclass(frozen=True)
class BalanceCheckout:
    """Where to send the patient: DNA's hosted page (redirect) or its script with paymentData."""

    payment_id: str
    redirect_url: str | None
    script_url: str
    payment_data: dict
    expires_at: datetime | None


def checkout_from_cached(cached: dict, payment: Payment) -> BalanceCheckout:
    expires = cached.get("expires_at")
    return BalanceCheckout(
        payment_id=str(payment.id),
        redirect_url=cached["redirect_url"],
        script_url=cached["script_url"],
        payment_data=json.loads(cached["payment_data_json"], parse_float=Decimal),
        expires_at=datetime.fromisoformat(expires) if expires else None,
    )


def _refuse_unless_payable(
    patient: Patient, payment: Payment, link: PaymentLink | None, now: datetime
) -> None:
    if payment.state in PAID_STATES or payment.state == S.AUTHORISED:
        raise InvalidTransition("This balance has already been paid.", code="already_paid")
    if link is not None:
        status = link.effective_status(now)
        if status != L.ACTIVE:
            raise LinkUnavailable(link, status)
    if not _own(patient).filter(balance_condition(now), pk=payment.pk).exists():
        if payment.state in (S.VOIDED, S.FAILED):
            raise InvalidTransition(
                "This payment request is closed. Ask the practice if you still need to pay.",
                code="balance_closed",
            )
        raise NotFound("No such balance.")


@transaction.atomic
def balance_checkout_start(*, actor: Actor, balance_id, return_url: str) -> BalanceCheckout:
    """Open DNA's hosted checkout for one of the patient's balances (the app's "Pay now").

    The balance's own payment is reused (flows.online_checkout_start with
    payment=...), so paying it updates the same record the practice sees and
    a pay-by-link is spent on capture. Rows are locked payment first, then link
    (the order a capture takes), and the checkout is shared with the
    pay-by-link page through the same cache entry: however many presses, from
    the app or the link, one checkout per attempt. A declined link attempt is
    retried with a new payment, as the link page does.
    """
    if actor.kind != "patient" or actor.patient is None:
        raise PaymentError("Only the patient pays their own balance.", code="permission_denied")
    patient = actor.patient
    try:
        payment_id = _own(patient).values_list("pk", flat=True).get(pk=balance_id)
    except (Payment.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No such balance.") from None
    payment = lock_payment(payment_id)
    link = PaymentLink.objects.select_for_update().filter(payment_id=payment.pk).first()
    now = timezone.now()
    _refuse_unless_payable(patient, payment, link, now)
    if payment.state == S.FAILED:
        payment = flows.pay_by_link_retry(payment_id=payment.id, actor=actor).payment
    key = _checkout_key(payment)
    cached = cache.get(key)
    if cached and payment.state == S.AWAITING_CUSTOMER_ACTION:
        return checkout_from_cached(cached, payment)
    session = flows.online_checkout_start(
        actor=actor,
        practice=payment.practice,
        site=payment.site,
        patient=patient,
        target_type=payment.target_type,
        target_id=payment.target_id,
        amount=payment.amount,
        return_url=return_url,
        method=payment.method,
        payment=payment,
    )
    lifetime = int((session.expires_at - now).total_seconds()) - 60
    cache.set(
        key,
        {
            "redirect_url": session.redirect_url,
            "payment_data_json": session.payment_data_json,
            "script_url": session.script_url,
            "expires_at": session.expires_at.isoformat(),
        },
        max(1, min(CHECKOUT_CACHE_SECONDS, lifetime)),
    )
    return BalanceCheckout(
        payment_id=str(payment.id),
        redirect_url=session.redirect_url,
        script_url=session.script_url,
        payment_data=session.payment_data,
        expires_at=session.expires_at,
    )
