"""The one write path for payments: create, move through the lifecycle, refund, void, approve.

Every function here is keyword-only and does, in one `transaction.atomic`:
check the actor may act, lock the rows (payment first, then split / refund /
approval), apply the django-fsm transition, append audit events and write the
outbox rows. Views, serializers, tasks and webhook handlers only translate
input and call these.

Outcome functions (`payment_capture`, `payment_fail`, ...) are idempotent for a
repeated outcome — a re-delivered provider webhook changes nothing twice — and
refuse a contradictory one with `InvalidTransition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone
from django_fsm import TransitionNotAllowed

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from integrations.models import Destination
from integrations.outbox import outbox_enqueue
from payments import events
from payments.errors import InvalidTransition, NotFound, PaymentError
from payments.locks import lock_approval, lock_payment, lock_payments, lock_refund, lock_split
from payments.models import (
    CARD_METHODS,
    OFFLINE_METHODS,
    PAID_STATES,
    PRE_CAPTURE_STATES,
    PROSPECT_TARGETS,
    REFUNDABLE_STATES,
    ApprovalRequest,
    InitiatorKind,
    Payment,
    PaymentLink,
    PaymentMethod,
    PaymentPurpose,
    PaymentState,
    Provider,
    ProviderOperation,
    ReasonCode,
    Refund,
    SplitPayment,
    SupplierPayment,
    TargetType,
    idempotency_key,
)
from payments.permissions import authorise
from practices import access
from practices.models import Patient, Practice, Site
from practices.roles import Perm
from primoro_payments import metrics
from terminals.models import Terminal

S = PaymentState
_CENTS = Decimal("0.01")
log = structlog.get_logger("payments.services")

# Methods each kind of initiator may start.
_PATIENT_METHODS = frozenset({PaymentMethod.ONLINE, PaymentMethod.PAY_BY_LINK})
_SYSTEM_METHODS = frozenset(
    {PaymentMethod.CARD_ON_FILE, PaymentMethod.PAY_BY_LINK, PaymentMethod.ONLINE}
)
_METHOD_PERMISSION = {
    PaymentMethod.VIRTUAL_TERMINAL: Perm.USE_VIRTUAL_TERMINAL,
    PaymentMethod.PAY_BY_LINK: Perm.ISSUE_PAY_BY_LINK,
}


@dataclass(frozen=True)
class Outcome:
    """What an outcome function did: the payment as it now is, and whether it changed."""

    payment: Payment
    changed: bool


@dataclass(frozen=True)
class RewardsCredit:
    amount: Decimal
    reference: str


@dataclass(frozen=True)
class TenderSpec:
    method: str
    amount: Decimal
    terminal: Terminal | None = None


@dataclass(frozen=True)
class RefundResult:
    """A refund either happened (or is pending at the provider), or waits for approval."""

    refund: Refund | None = None
    approval: ApprovalRequest | None = None


# --- Validation helpers ------------------------------------------------------


def money(value, *, field: str = "amount") -> Decimal:
    """Parse a positive money amount with at most two decimal places. Never a float."""
    if isinstance(value, float):
        raise PaymentError(
            "Amounts must be given as decimal strings, not floats.",
            code="invalid_amount",
            field=field,
        )
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise PaymentError(
            "Enter an amount such as 12.50.", code="invalid_amount", field=field
        ) from None
    if not amount.is_finite() or amount <= 0:
        raise PaymentError("The amount must be more than zero.", code="invalid_amount", field=field)
    if amount != amount.quantize(_CENTS):
        raise PaymentError(
            "Amounts have at most two decimal places.", code="invalid_amount", field=field
        )
    if amount >= Decimal("10000000000"):
        raise PaymentError("The amount is too large.", code="invalid_amount", field=field)
    return amount.quantize(_CENTS)


def _reason(reason_code: str) -> str:
    if reason_code not in ReasonCode.values:
        raise PaymentError(
            "Choose a reason: " + ", ".join(label for label in ReasonCode.labels) + ".",
            code="invalid_reason_code",
            field="reason_code",
        )
    return reason_code


def _authorise_initiator(
    actor: Actor, *, practice: Practice, site: Site, patient: Patient, method: str
) -> None:
    if actor.kind == "staff":
        access.require(actor.user, Perm.INITIATE_PAYMENT, practice_id=practice.id, site_id=site.id)
        extra = _METHOD_PERMISSION.get(method)
        if extra:
            access.require(actor.user, extra, practice_id=practice.id, site_id=site.id)
        if method == PaymentMethod.VIRTUAL_TERMINAL and not practice.virtual_terminal_enabled:
            raise PaymentError(
                "The virtual terminal is not enabled for this practice.",
                code="virtual_terminal_disabled",
            )
        if method == PaymentMethod.VIRTUAL_TERMINAL:
            access.require_recent_mfa(actor.user, practice)
    elif actor.kind == "patient":
        if actor.patient is None or actor.patient.pk != patient.pk:
            raise NotFound("No such balance.")
        if method not in _PATIENT_METHODS:
            raise PaymentError("Patients pay online.", code="method_not_allowed", field="method")
    elif actor.kind == "system":
        if method not in _SYSTEM_METHODS:
            raise PaymentError(
                "System triggers cannot start this method.",
                code="method_not_allowed",
                field="method",
            )
    else:
        raise PaymentError("This actor cannot start payments.", code="permission_denied")


def _validate_target(
    *, practice: Practice, patient: Patient, target_type: str, target_id: str
) -> None:
    if target_type not in TargetType.values:
        raise PaymentError(
            "The billable target must be an invoice, patient balance, deposit, payment request or commerce order.",
            code="invalid_target",
            field="target_type",
        )
    if not target_id or len(target_id) > 64:
        raise PaymentError(
            "A billable target reference is required.", code="invalid_target", field="target_id"
        )
    if patient.practice_id != practice.id:
        raise NotFound("No such patient.")
    if patient.is_prospect and (
        target_type not in PROSPECT_TARGETS or not practice.prospect_payments_enabled
    ):
        raise PaymentError(
            "A prospect may pay only a deposit, payment request or product order, where the practice allows it.",
            code="prospect_not_permitted",
            field="patient",
        )


def _validate_terminal(*, method: str, site: Site, terminal: Terminal | None) -> None:
    if method == PaymentMethod.TERMINAL:
        if terminal is None:
            raise PaymentError("Choose a terminal.", code="terminal_required", field="terminal")
        if terminal.site_id != site.id or not terminal.active:
            raise PaymentError(
                "That terminal is not registered to this site.",
                code="invalid_terminal",
                field="terminal",
            )
    elif terminal is not None:
        raise PaymentError(
            "Only terminal payments use a terminal.", code="invalid_terminal", field="terminal"
        )


def _validate_credit(practice: Practice, amount: Decimal, credit: RewardsCredit) -> RewardsCredit:
    if not practice.rewards_enabled:
        raise PaymentError("Rewards are not enabled for this practice.", code="rewards_disabled")
    if not credit.reference or len(credit.reference) > 64:
        raise PaymentError(
            "A rewards credit needs its redemption reference.",
            code="invalid_rewards_credit",
            field="rewards_credit_reference",
        )
    credit_amount = money(credit.amount, field="rewards_credit")
    if credit_amount >= amount:
        raise PaymentError(
            "The rewards credit must be less than the amount due.",
            code="invalid_rewards_credit",
            field="rewards_credit",
        )
    return RewardsCredit(amount=credit_amount, reference=credit.reference)


def payment_audit_record(payment: Payment, actor: Actor, event_type, **fields) -> None:
    """An audit event about `payment`, with the payment's own facts filled in (§8).

    The one way to audit something that happened to a payment; `fields` add to or
    override the payment's facts (e.g. a link as the subject, a reason code).
    """
    values = {
        "site_id": payment.site_id,
        "terminal_id": payment.terminal_id,
        "payment_id": payment.id,
        "subject_type": "payment",
        "subject_id": str(payment.id),
        "amount": payment.amount,
        "currency": payment.currency,
        "method": payment.method,
        "target_type": payment.target_type,
        "target_id": payment.target_id,
        "provider_reference": payment.provider_reference,
        **fields,
    }
    audit_record(event_type=event_type, practice_id=payment.practice_id, actor=actor, **values)


def _state_change(
    payment: Payment,
    actor: Actor,
    from_state: str,
    *,
    event_type=EventType.PAYMENT_STATE_CHANGED,
    **fields,
):
    """Audit a lifecycle transition that has just been applied to `payment`."""
    payment_audit_record(
        payment, actor, event_type, from_state=from_state, to_state=payment.state, **fields
    )


def _apply(payment: Payment, transition_name: str, **kwargs) -> None:
    try:
        getattr(payment, transition_name)(**kwargs)
    except TransitionNotAllowed:
        raise InvalidTransition(
            f"A payment that is {payment.get_state_display().lower()} cannot be {transition_name.replace('_', ' ')}d.",
        ) from None


# --- Creating payments -------------------------------------------------------


@transaction.atomic
def payment_create(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount,
    method: str,
    pms_invoice_ref: str = "",
    terminal: Terminal | None = None,
    payment_profile_id: str = "",
    rewards_credit: RewardsCredit | None = None,
    split: SplitPayment | None = None,
    retry_of: Payment | None = None,
    initiate: bool = True,
) -> Payment:
    """Create a payment in `proposed` and, by default, move it to `initiated` (§13.2.1)."""
    if method not in PaymentMethod.values:
        raise PaymentError("Unknown payment method.", code="invalid_method", field="method")
    amount = money(amount)
    if site.practice_id != practice.id:
        raise NotFound("No such site.")
    _authorise_initiator(actor, practice=practice, site=site, patient=patient, method=method)
    _validate_target(
        practice=practice, patient=patient, target_type=target_type, target_id=target_id
    )
    _validate_terminal(method=method, site=site, terminal=terminal)
    if method == PaymentMethod.CARD_ON_FILE and not payment_profile_id:
        raise PaymentError(
            "A card-on-file payment needs its payment profile.", code="payment_profile_required"
        )
    if rewards_credit is not None:
        rewards_credit = _validate_credit(practice, amount, rewards_credit)
    if target_type == TargetType.INVOICE and not pms_invoice_ref:
        pms_invoice_ref = target_id

    payment = Payment(
        practice=practice,
        site=site,
        terminal=terminal,
        patient=patient,
        target_type=target_type,
        target_id=target_id,
        pms_invoice_ref=pms_invoice_ref,
        split=split,
        retry_of=retry_of,
        method=method,
        amount=amount,
        currency=practice.currency,
        provider=Provider.DNA if method in CARD_METHODS else Provider.NONE,
        payment_profile_id=payment_profile_id,
        moto=method == PaymentMethod.VIRTUAL_TERMINAL,
        initiated_by_kind=actor.kind
        if actor.kind in InitiatorKind.values
        else InitiatorKind.SYSTEM,
        initiated_by_user=actor.user if actor.is_staff else None,
        initiated_by_label=actor.label if actor.kind != "patient" else "patient-self-serve",
    )
    if rewards_credit is not None:
        payment.rewards_credit_applied = rewards_credit.amount
        payment.rewards_credit_reference = rewards_credit.reference
    if initiate:
        # Written once, already initiated; the audit trail still shows proposed -> initiated.
        _apply(payment, "initiate")
    payment.save(force_insert=True)
    if rewards_credit is not None:
        _audit_credit(payment, actor)
    if initiate:
        _record_initiated(payment, actor)
        if method == PaymentMethod.CARD_ON_FILE:
            # The trigger supplied the payment profile: charge it at the provider, once.
            _provider_operation(payment, "card_on_file_charge")
    return payment


def _initiate(payment: Payment, actor: Actor) -> None:
    _apply(payment, "initiate")
    payment.save(update_fields=["state", "updated_at"])
    _record_initiated(payment, actor)


def _record_initiated(payment: Payment, actor: Actor) -> None:
    _state_change(
        payment,
        actor,
        S.PROPOSED,
        event_type=EventType.PAYMENT_INITIATED,
        payload={"initiated_by": payment.initiated_by_label, "moto": payment.moto},
    )
    events.on_initiated(payment)


@transaction.atomic
def payment_initiate(*, payment_id, actor: Actor) -> Payment:
    payment = lock_payment(payment_id)
    _authorise_initiator(
        actor,
        practice=payment.practice,
        site=payment.site,
        patient=payment.patient,
        method=payment.method,
    )
    _initiate(payment, actor)
    return payment


def _audit_credit(payment: Payment, actor: Actor) -> None:
    payment_audit_record(
        payment,
        actor,
        EventType.REWARDS_CREDIT_APPLIED,
        amount=payment.rewards_credit_applied,
        payload={
            "redemption_reference": payment.rewards_credit_reference,
            "charge_amount": str(payment.charge_amount),
        },
    )


@transaction.atomic
def payment_apply_rewards_credit(*, payment_id, actor: Actor, amount, reference: str) -> Payment:
    """Apply the credit Rewards Manager passed, before the charge reaches the provider (§4.5)."""
    payment = lock_payment(payment_id)
    if actor.kind == "staff":
        access.require(
            actor.user,
            Perm.INITIATE_PAYMENT,
            practice_id=payment.practice_id,
            site_id=payment.site_id,
        )
    if payment.state not in (S.PROPOSED, S.INITIATED):
        raise InvalidTransition("Rewards credit can only be applied before the charge is sent.")
    if payment.operations.exists():
        # An initiated terminal or card-on-file payment may already be on its way to
        # DNA for the full amount: a credit now would not change what is charged.
        raise InvalidTransition(
            "The charge has already been sent to the provider; the rewards credit cannot be applied now.",
            code="charge_already_sent",
        )
    if payment.rewards_credit_applied:
        raise PaymentError(
            "A rewards credit is already applied to this payment.",
            code="rewards_credit_already_applied",
        )
    credit = _validate_credit(
        payment.practice, payment.amount, RewardsCredit(amount=amount, reference=reference)
    )
    payment.rewards_credit_applied = credit.amount
    payment.rewards_credit_reference = credit.reference
    payment.save(update_fields=["rewards_credit_applied", "rewards_credit_reference", "updated_at"])
    _audit_credit(payment, actor)
    return payment


# --- Provider outcomes -----------------------------------------------------


def _record_reference(payment: Payment, provider_reference: str) -> None:
    if provider_reference and not payment.provider_reference:
        payment.provider_reference = provider_reference[:128]


@transaction.atomic
def payment_await_customer(*, payment_id, actor: Actor, provider_reference: str = "") -> Outcome:
    """Terminal prompt issued / hosted checkout presented / link sent."""
    payment = lock_payment(payment_id)
    if payment.state != S.INITIATED:
        if (
            payment.state in (S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED)
            or payment.state in PAID_STATES
        ):
            return Outcome(payment, changed=False)
        raise InvalidTransition(
            f"A {payment.get_state_display().lower()} payment cannot await the customer."
        )
    _record_reference(payment, provider_reference)
    _apply(payment, "await_customer")
    payment.save(update_fields=["state", "provider_reference", "updated_at"])
    _state_change(payment, actor, S.INITIATED)
    return Outcome(payment, changed=True)


@transaction.atomic
def payment_authorise(*, payment_id, actor: Actor, provider_reference: str = "") -> Outcome:
    payment = lock_payment(payment_id)
    if payment.state == S.AUTHORISED or payment.state in PAID_STATES:
        return Outcome(payment, changed=False)
    from_state = payment.state
    _record_reference(payment, provider_reference)
    _apply(payment, "authorise", at=timezone.now())
    payment.save(update_fields=["state", "provider_reference", "authorised_at", "updated_at"])
    _state_change(payment, actor, from_state)
    return Outcome(payment, changed=True)


@transaction.atomic
def payment_capture(
    *, payment_id, actor: Actor, amount=None, provider_reference: str = ""
) -> Outcome:
    """Record that the funds were captured. A second capture is a no-op (§13.2.5)."""
    payment = lock_payment(payment_id)
    if payment.state in PAID_STATES:
        return Outcome(payment, changed=False)
    captured = payment.charge_amount if amount is None else money(amount)
    if captured != payment.charge_amount:
        raise PaymentError(
            f"Captured {captured} but {payment.charge_amount} was charged.",
            code="capture_amount_mismatch",
        )
    from_state = payment.state
    _record_reference(payment, provider_reference)
    _apply(payment, "capture", amount=captured, at=timezone.now())
    if payment.method == PaymentMethod.PAY_BY_LINK:
        # Single use: the link is spent in the same transaction as the capture.
        PaymentLink.objects.filter(payment=payment).exclude(status=PaymentLink.Status.USED).update(
            status=PaymentLink.Status.USED, used_at=payment.captured_at
        )
    events.on_captured(payment)
    payment.save(
        update_fields=[
            "state",
            "provider_reference",
            "captured_amount",
            "captured_at",
            "pms_writeback_status",
            "updated_at",
        ]
    )
    _state_change(payment, actor, from_state, amount=captured)
    metrics.payment_outcome(payment, "captured")
    if payment.split_id:
        _settle_split_if_complete(payment.split_id, actor)
    _sync_deposit(payment, actor)
    return Outcome(payment, changed=True)


@transaction.atomic
def payment_fail(
    *, payment_id, actor: Actor, code: str, reason: str, provider_reference: str = ""
) -> Outcome:
    """Declined, cancelled by the customer, or timed out with the provider confirming nothing happened."""
    payment = lock_payment(payment_id)
    if payment.state == S.FAILED:
        return Outcome(payment, changed=False)
    if payment.state in PAID_STATES:
        raise InvalidTransition("A captured payment cannot fail; refund it instead.")
    from_state = payment.state
    _record_reference(payment, provider_reference)
    _apply(payment, "fail", code=code[:64], reason=reason, at=timezone.now())
    payment.save(
        update_fields=[
            "state",
            "provider_reference",
            "failure_code",
            "failure_reason",
            "failed_at",
            "updated_at",
        ]
    )
    _state_change(
        payment,
        actor,
        from_state,
        payload={"failure_code": payment.failure_code, "failure_reason": payment.failure_reason},
    )
    events.on_failed(payment)
    metrics.payment_outcome(payment, "failed")
    return Outcome(payment, changed=True)


@transaction.atomic
def payment_retry(*, payment_id, actor: Actor) -> Payment:
    """A new attempt for a failed payment, linked to the same target; the failed one keeps its history."""
    failed = lock_payment(payment_id)
    if failed.state != S.FAILED:
        raise InvalidTransition("Only a failed payment can be retried.")
    if failed.is_procurement:
        raise PaymentError(
            "A supplier payment is retried by a new signal from Inventory & Compliance Manager.",
            code="method_not_allowed",
        )
    if failed.retries.exists():
        raise PaymentError("This payment has already been retried.", code="already_retried")
    if failed.split_id:
        split = lock_split(failed.split_id)
        _require_open_split(split)
        if failed.amount > split_uncovered(split):
            raise PaymentError(
                "Another tender has already replaced this one.", code="already_retried"
            )
    retry = payment_create(
        actor=actor,
        practice=failed.practice,
        site=failed.site,
        patient=failed.patient,
        target_type=failed.target_type,
        target_id=failed.target_id,
        pms_invoice_ref=failed.pms_invoice_ref,
        amount=failed.amount,
        method=failed.method,
        terminal=failed.terminal if failed.terminal and failed.terminal.active else None,
        payment_profile_id=failed.payment_profile_id,
        rewards_credit=(
            RewardsCredit(failed.rewards_credit_applied, failed.rewards_credit_reference)
            if failed.rewards_credit_applied
            else None
        ),
        split=failed.split,
        retry_of=failed,
    )
    if failed.due_at is not None:  # owed since then still: overdue reminders follow the retry
        _write_due_date(retry, actor, failed.due_at, carried_from_payment_id=str(failed.id))
    return retry


@transaction.atomic
def payment_void(*, payment_id, actor: Actor, reason_code: str, notes: str = "") -> Outcome:
    """Cancel before capture (§4.4). Needs the refund/void role when a person does it."""
    payment = lock_payment(payment_id)
    authorise(
        actor,
        Perm.ISSUE_VOID,
        payment,
        refusal="This actor cannot void payments.",
        also=("system", "provider"),
    )
    reason_code = _reason(reason_code)
    if payment.state == S.VOIDED:
        return Outcome(payment, changed=False)
    if payment.state not in (S.PROPOSED, S.INITIATED, S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED):
        raise InvalidTransition(
            "Only a payment that has not been captured can be voided; refund it instead."
        )
    from_state = payment.state
    _apply(payment, "void", reason_code=reason_code, at=timezone.now())
    payment.save(update_fields=["state", "void_reason_code", "voided_at", "updated_at"])
    payload = {"notes": notes}
    link = _link_cancel(payment)
    if link is not None:
        payload["payment_link"] = {"id": str(link.id), "status": link.status}
    _state_change(
        payment,
        actor,
        from_state,
        event_type=EventType.PAYMENT_VOIDED,
        reason_code=reason_code,
        payload=payload,
    )
    if payment.method in CARD_METHODS and from_state in (S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED):
        _provider_operation(payment, "cancel")
    metrics.payment_voided(payment)
    return Outcome(payment, changed=True)


def _link_cancel(payment: Payment) -> PaymentLink | None:
    """A voided pay-by-link payment cannot be paid: its link, if still active, is cancelled.

    The caller holds the payment's lock (payment first, then link, as a capture
    takes them); the void's audit event records the link it cancelled.
    """
    if payment.method != PaymentMethod.PAY_BY_LINK:
        return None
    link = (
        PaymentLink.objects.select_for_update()
        .filter(payment=payment, status=PaymentLink.Status.ACTIVE)
        .first()
    )
    if link is None:
        return None
    link.status = PaymentLink.Status.CANCELLED
    link.save(update_fields=["status"])
    return link


@transaction.atomic
def payment_reconcile(*, payment_id, actor: Actor, batch_reference: str) -> Outcome:
    payment = lock_payment(payment_id)
    if payment.state == S.RECONCILED:
        return Outcome(payment, changed=False)
    if payment.refunds.filter(status=Refund.Status.PENDING).exists():
        # A refund still in flight would have nowhere to land once reconciled;
        # the next reconciliation pass picks the payment up when it settles.
        raise InvalidTransition("This payment has a refund pending at the provider.")
    from_state = payment.state
    _apply(payment, "reconcile", at=timezone.now())
    payment.save(update_fields=["state", "reconciled_at", "updated_at"])
    _state_change(payment, actor, from_state, payload={"batch_reference": batch_reference})
    return Outcome(payment, changed=True)


def _provider_operation(
    payment: Payment, operation: str, discriminator: str = ""
) -> ProviderOperation:
    """Record a money-moving provider call to make; its key makes a second one impossible.

    A new row is executed after commit (integrations.dna.tasks.execute_provider_operation)
    when DNA_OPERATIONS_ON_COMMIT is set; the beat sweep runs any row still pending.
    """
    op, created = ProviderOperation.objects.get_or_create(
        idempotency_key=idempotency_key(payment.id, operation, discriminator),
        defaults={"payment": payment, "operation": operation},
    )
    if (
        created
        and payment.provider == Provider.DNA
        and getattr(settings, "DNA_OPERATIONS_ON_COMMIT", False)
    ):
        transaction.on_commit(lambda: _dispatch_provider_operation(op.pk), robust=True)
    return op


def _dispatch_provider_operation(op_id: int) -> None:
    """After commit: ask a worker to run the call now. If the broker is down, the sweep will."""
    from kombu.exceptions import OperationalError

    from integrations.dna.tasks import execute_provider_operation

    try:
        execute_provider_operation.delay(op_id)
    except OperationalError as exc:
        log.warning("provider_operation_not_queued", operation=op_id, error=str(exc))


@transaction.atomic
def provider_operation_request(
    *, payment_id, operation: str, discriminator: str = ""
) -> ProviderOperation:
    """Record (once) a provider call a flow needs, e.g. the terminal sale of a new payment."""
    payment = lock_payment(payment_id)
    if payment.provider != Provider.DNA:
        raise PaymentError("Only provider payments call the provider.", code="method_not_allowed")
    return _provider_operation(payment, operation, discriminator)


@transaction.atomic
def payment_request_capture(*, payment_id, actor: Actor) -> ProviderOperation:
    """Ask DNA to capture an authorised card payment; the capture lands when DNA confirms it."""
    payment = lock_payment(payment_id)
    authorise(
        actor,
        Perm.INITIATE_PAYMENT,
        payment,
        refusal="This actor cannot capture payments.",
        also=("system", "provider"),
    )
    if payment.state in PAID_STATES:
        existing = payment.operations.filter(operation="charge").first()
        if existing is not None:
            return existing
        raise InvalidTransition("This payment is already captured.")
    if payment.state != S.AUTHORISED or payment.provider != Provider.DNA:
        raise InvalidTransition("Only an authorised card payment can be captured.")
    if not payment.provider_reference:
        raise PaymentError(
            "The provider transaction of this payment is not known yet.",
            code="provider_reference_missing",
        )
    return _provider_operation(payment, "charge")


@transaction.atomic
def provider_operation_claim(*, op_id, lease_seconds: float, now=None) -> ProviderOperation | None:
    """Take a pending operation for one attempt, or None if it is done or another worker has it.

    The lease is `updated_at`: a row touched less than `lease_seconds` ago (and
    already attempted) is being worked on, so concurrent runs skip it.
    """
    now = now or timezone.now()
    op = (
        ProviderOperation.objects.select_for_update(skip_locked=True)
        .select_related("payment")
        .filter(pk=op_id, status=ProviderOperation.Status.PENDING)
        .filter(Q(attempts=0) | Q(updated_at__lte=now - timedelta(seconds=lease_seconds)))
        .first()
    )
    if op is None:
        return None
    op.attempts += 1
    op.save(update_fields=["attempts", "updated_at"])
    return op


def provider_operations_due(*, lease_seconds: float, now=None, limit: int = 200) -> list[int]:
    """Pending operations nobody is working on (lost task, unknown outcome to ask again).

    An operation tried n times waits lease × 2^(n-1) (at most × 64) before the next
    try, so a long provider outage is asked about less and less often, never never.
    """
    now = now or timezone.now()
    candidates = (
        ProviderOperation.objects.filter(status=ProviderOperation.Status.PENDING)
        .filter(Q(attempts=0) | Q(updated_at__lte=now - timedelta(seconds=lease_seconds)))
        .order_by("updated_at")
        .values_list("pk", "attempts", "updated_at")
    )
    due = []
    for pk, attempts, updated_at in candidates.iterator():
        wait = lease_seconds * 2 ** min(max(attempts - 1, 0), 6)
        if attempts == 0 or updated_at <= now - timedelta(seconds=wait):
            due.append(pk)
            if len(due) >= limit:
                break
    return due


@transaction.atomic
def provider_operation_settle(
    *, op_id, status: str, provider_reference: str = "", error: str = ""
) -> ProviderOperation:
    """Record what the provider said: succeeded, failed (nothing happened), or still pending."""
    if status not in ProviderOperation.Status.values:
        raise ValueError(f"unknown provider operation status {status!r}")
    op = ProviderOperation.objects.select_for_update().get(pk=op_id)
    if op.status != ProviderOperation.Status.PENDING:
        return op
    op.status = status
    if provider_reference:
        op.provider_reference = provider_reference[:128]
    op.last_error = error[:255]
    op.save(update_fields=["status", "provider_reference", "last_error", "updated_at"])
    return op


@transaction.atomic
def payment_flag_exception(
    *, payment_id, actor: Actor, code: str, detail: str, reference: str = ""
) -> bool:
    """A provider fact we refuse to apply (e.g. a decline after a capture): audit it and task staff.

    Flagged once per (payment, code, reference); returns whether this call flagged it.
    """
    payment = lock_payment(payment_id)
    message = outbox_enqueue(
        destination=Destination.TASK_MANAGER,
        event_type="task.create",
        practice_id=payment.practice_id,
        payment_id=payment.id,
        payload={
            "task_type": "payment_exception",
            "title": f"Payment of {payment.currency} {payment.amount} needs attention",
            "detail": detail,
            "exception_code": code,
            "provider_reference": reference or None,
            "payment": events.payment_facts(payment),
        },
        schema_version=events.SCHEMA_VERSION,
        dedupe_key=f"task:exception:{payment.id}:{code}:{reference}"[:200],
    )
    if message is None:
        return False
    payment_audit_record(
        payment,
        actor,
        EventType.PAYMENT_EXCEPTION_FLAGGED,
        reason_code=code[:32],
        payload={"code": code, "detail": detail[:500], "reference": reference},
    )
    return True


def _sync_deposit(payment: Payment, actor: Actor) -> None:
    """A deposit collected by this payment follows its capture and full refund."""
    if payment.target_type == TargetType.DEPOSIT:
        # payments.deposits builds on this module, hence the import here.
        from payments.deposits import deposit_sync_from_payment

        deposit_sync_from_payment(payment=payment, actor=actor)


# --- Cash and voucher tenders ------------------------------------------------


@transaction.atomic
def tender_record_received(*, payment_id, actor: Actor) -> Outcome:
    """Staff confirm a cash or voucher tender was received: it is captured there and then."""
    payment = lock_payment(payment_id)
    if payment.method not in OFFLINE_METHODS:
        raise PaymentError(
            "Only cash and voucher tenders are recorded by staff.", code="method_not_allowed"
        )
    if actor.kind == "staff":
        access.require(
            actor.user,
            Perm.INITIATE_PAYMENT,
            practice_id=payment.practice_id,
            site_id=payment.site_id,
        )
    return payment_capture(payment_id=payment.id, actor=actor)


@transaction.atomic
def offline_payment_record(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount,
    method: str,
    pms_invoice_ref: str = "",
) -> Payment:
    """Cash or a voucher taken at the desk: created and captured together, or not at all."""
    if method not in OFFLINE_METHODS:
        raise PaymentError(
            "Only cash and voucher tenders are recorded by staff.",
            code="method_not_allowed",
            field="method",
        )
    payment = payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=target_type,
        target_id=target_id,
        amount=amount,
        method=method,
        pms_invoice_ref=pms_invoice_ref,
    )
    return tender_record_received(payment_id=payment.id, actor=actor).payment


# --- Split payments ----------------------------------------------------------


@transaction.atomic
def split_create(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount_due,
    tenders: list[TenderSpec],
    pms_invoice_ref: str = "",
) -> SplitPayment:
    """Several tenders against one target; they must add up to exactly the amount due."""
    amount_due = money(amount_due, field="amount_due")
    if len(tenders) < 2:
        raise PaymentError(
            "A split needs at least two tenders.", code="split_needs_tenders", field="tenders"
        )
    amounts = [money(t.amount, field="tenders") for t in tenders]
    total = sum(amounts, Decimal("0"))
    if total < amount_due:
        raise PaymentError(
            f"The tenders add up to {total}, {amount_due - total} short of {amount_due}.",
            code="split_underpaid",
            field="tenders",
        )
    if total > amount_due:
        raise PaymentError(
            f"The tenders add up to {total}, {total - amount_due} more than {amount_due}.",
            code="split_overpaid",
            field="tenders",
        )
    split = SplitPayment.objects.create(
        practice=practice,
        site=site,
        patient=patient,
        target_type=target_type,
        target_id=target_id,
        pms_invoice_ref=pms_invoice_ref or (target_id if target_type == TargetType.INVOICE else ""),
        amount_due=amount_due,
        currency=practice.currency,
        created_by=actor.user if actor.is_staff else None,
    )
    for tender, amount in zip(tenders, amounts, strict=True):
        payment_create(
            actor=actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=target_type,
            target_id=target_id,
            pms_invoice_ref=split.pms_invoice_ref,
            amount=amount,
            method=tender.method,
            terminal=tender.terminal,
            split=split,
        )
    return split


def split_remaining(split: SplitPayment) -> Decimal:
    """What is still to be captured on a split."""
    captured = Payment.objects.filter(split=split, state__in=PAID_STATES).aggregate(
        total=Sum("captured_amount")
    )["total"] or Decimal("0")
    return split.amount_due - captured


def split_uncovered(split: SplitPayment) -> Decimal:
    """What no live tender covers: the amount of failed (not retried) and voided tenders.

    A replacement tender or a retry may cover at most this, so a split is never overpaid.
    """
    live = (
        Payment.objects.filter(split=split)
        .exclude(state__in=[S.FAILED, S.VOIDED])
        .aggregate(total=Sum("amount"))["total"]
    )
    return split.amount_due - (live or Decimal("0"))


def _require_open_split(split: SplitPayment) -> None:
    if split.status != SplitPayment.Status.OPEN:
        raise InvalidTransition(f"This split payment is {split.get_status_display().lower()}.")


def _audit_split(split: SplitPayment, actor: Actor, event_type, **fields) -> None:
    audit_record(
        event_type=event_type,
        practice_id=split.practice_id,
        actor=actor,
        site_id=split.site_id,
        subject_type="split",
        subject_id=str(split.id),
        currency=split.currency,
        target_type=split.target_type,
        target_id=split.target_id,
        **fields,
    )


@transaction.atomic
def split_add_tender(
    *, split_id, actor: Actor, method: str, amount, terminal: Terminal | None = None
) -> Payment:
    """A new tender on an open split, e.g. in place of a voided one; never beyond what is uncovered."""
    split = lock_split(split_id)
    _require_open_split(split)
    amount = money(amount)
    uncovered = split_uncovered(split)
    if amount > uncovered:
        raise PaymentError(
            f"The tenders would add up to more than {split.amount_due}: "
            f"at most {max(uncovered, Decimal('0'))} is not covered by a live tender.",
            code="split_overpaid",
            field="amount",
        )
    payment = payment_create(
        actor=actor,
        practice=split.practice,
        site=split.site,
        patient=split.patient,
        target_type=split.target_type,
        target_id=split.target_id,
        pms_invoice_ref=split.pms_invoice_ref,
        amount=amount,
        method=method,
        terminal=terminal,
        split=split,
    )
    _audit_split(
        split,
        actor,
        EventType.SPLIT_TENDER_ADDED,
        payment_id=payment.id,
        amount=amount,
        method=method,
        payload={"payment_id": str(payment.id), "uncovered_before": str(uncovered)},
    )
    return payment


@dataclass(frozen=True)
class SplitCancellation:
    split: SplitPayment
    voided: list[Payment]
    refunds: list[RefundResult]


@transaction.atomic
def split_cancel(*, split_id, actor: Actor, reason_code: str, notes: str = "") -> SplitCancellation:
    """Give up on an open split: void the tenders not yet captured, refund the captured ones.

    Needs the void permission (and the refund permission when a tender was
    captured; a refund above the threshold waits for an approver as always).
    A settled split is not cancelled: its tenders are refunded one by one.
    """
    tender_ids = list(Payment.objects.filter(split_id=split_id).values_list("pk", flat=True))
    lock_payments(tender_ids)  # the payment path's order: payments, then the split
    split = lock_split(split_id)
    authorise(actor, Perm.ISSUE_VOID, split, refusal="This actor cannot cancel split payments.")
    reason_code = _reason(reason_code)
    _require_open_split(split)
    tenders = list(lock_payments(Payment.objects.filter(split=split).values_list("pk", flat=True)))
    voided, refunds = [], []
    for tender in tenders:
        if tender.state in PRE_CAPTURE_STATES:
            voided.append(
                payment_void(
                    payment_id=tender.id,
                    actor=actor,
                    reason_code=reason_code,
                    notes=f"Split cancelled. {notes}".strip(),
                ).payment
            )
        elif tender.state in REFUNDABLE_STATES and tender.captured_amount > _reserved_refunds(
            tender
        ):
            refunds.append(
                refund_request(
                    payment_id=tender.id,
                    actor=actor,
                    reason_code=reason_code,
                    notes=f"Split cancelled. {notes}".strip(),
                )
            )
    split.status = SplitPayment.Status.CANCELLED
    split.save(update_fields=["status"])
    _audit_split(
        split,
        actor,
        EventType.SPLIT_CANCELLED,
        amount=split.amount_due,
        reason_code=reason_code,
        payload={
            "notes": notes,
            "voided": [str(p.id) for p in voided],
            "refunds": [str(r.refund.id) for r in refunds if r.refund],
            "approvals": [str(r.approval.id) for r in refunds if r.approval],
        },
    )
    return SplitCancellation(split=split, voided=voided, refunds=refunds)


def _settle_split_if_complete(split_id, actor: Actor) -> None:
    split = lock_split(split_id)
    if split.status != SplitPayment.Status.OPEN:
        return
    # The live tenders: for each failed one, its retry stands in its place.
    tenders = list(
        Payment.objects.filter(split=split)
        .exclude(state__in=[S.FAILED, S.VOIDED])
        .order_by("created_at")
    )
    if not tenders or any(t.state not in PAID_STATES for t in tenders):
        return
    if sum((t.captured_amount for t in tenders), Decimal("0")) != split.amount_due:
        return
    split.status = SplitPayment.Status.SETTLED
    split.settled_at = timezone.now()
    split.save(update_fields=["status", "settled_at"])
    audit_record(
        event_type=EventType.SPLIT_SETTLED,
        practice_id=split.practice_id,
        actor=actor,
        site_id=split.site_id,
        subject_type="split",
        subject_id=str(split.id),
        amount=split.amount_due,
        currency=split.currency,
        target_type=split.target_type,
        target_id=split.target_id,
        payload={
            "tenders": [
                {"payment_id": str(t.id), "method": t.method, "amount": str(t.captured_amount)}
                for t in tenders
            ]
        },
    )
    events.on_split_settled(split, tenders)


# --- Refunds and approvals -----------------------------------------------------


def _reserved_refunds(payment: Payment) -> Decimal:
    """Refunds already succeeded or still pending at the provider, which the cap must include."""
    return payment.refunds.filter(
        status__in=[Refund.Status.PENDING, Refund.Status.SUCCEEDED]
    ).aggregate(total=Sum("amount"))["total"] or Decimal("0")


def _needs_approval(payment: Payment, amount: Decimal) -> bool:
    """Above the threshold counting everything refunded on the payment, not this refund alone.

    Refunds made or pending and refunds waiting for approval count with this
    one, so four refunds of 250 cannot return 1,000 past a 250 threshold.
    """
    threshold = payment.practice.refund_approval_threshold
    if threshold is None:
        return False
    awaiting = payment.approvals.filter(status=ApprovalRequest.Status.PENDING).aggregate(
        total=Sum("amount")
    )["total"] or Decimal("0")
    return _reserved_refunds(payment) + awaiting + amount > threshold


@transaction.atomic
def refund_request(
    *, payment_id, actor: Actor, amount=None, reason_code: str, notes: str = ""
) -> RefundResult:
    """Refund all (amount None) or part of a captured payment, by its original method.

    Above the practice threshold, a staff request becomes an approval request
    for a second person; nothing moves until it is granted.
    """
    payment = lock_payment(payment_id)
    authorise(actor, Perm.ISSUE_REFUND, payment, refusal="This actor cannot refund payments.")
    reason_code = _reason(reason_code)
    if payment.state not in REFUNDABLE_STATES:
        raise InvalidTransition(
            "Only a captured, partially refunded or settled payment can be refunded."
        )
    available = payment.captured_amount - _reserved_refunds(payment)
    amount = available if amount is None else money(amount)
    if amount <= 0 or amount > available:
        raise PaymentError(
            f"At most {available} {payment.currency} can still be refunded.",
            code="refund_exceeds_captured",
            field="amount",
        )
    if actor.kind == "staff" and _needs_approval(payment, amount):
        return RefundResult(approval=_approval_create(payment, actor, amount, reason_code, notes))
    return RefundResult(
        refund=_refund_start(payment, actor, amount, reason_code, notes, approver=None)
    )


def _refund_start(
    payment: Payment,
    actor: Actor,
    amount: Decimal,
    reason_code: str,
    notes: str,
    *,
    approver: Actor | None,
) -> Refund:
    refund = Refund(
        practice_id=payment.practice_id,
        site_id=payment.site_id,
        payment=payment,
        amount=amount,
        method=payment.method,
        original_provider_reference=payment.provider_reference,
        reason_code=reason_code,
        notes=notes,
        requested_by=actor.user if actor.is_staff else None,
        requested_by_label=actor.label,
        approved_by=approver.user if approver else None,
    )
    refund.idempotency_key = idempotency_key(payment.id, "refund", str(refund.id))
    refund.save(force_insert=True)
    if payment.method in OFFLINE_METHODS:
        # Cash or voucher handed back in the practice: done now.
        _refund_succeed(payment, refund, actor, approver=approver)
    else:
        _provider_operation(payment, "refund", str(refund.id))
    return refund


def _refund_succeed(
    payment: Payment,
    refund: Refund,
    actor: Actor,
    *,
    approver: Actor | None = None,
    provider_reference: str = "",
) -> None:
    from_state = payment.state
    refund.status = Refund.Status.SUCCEEDED
    refund.completed_at = timezone.now()
    refund.provider_reference = provider_reference[:128]
    refund.save(update_fields=["status", "completed_at", "provider_reference"])
    full = payment.refunded_amount + refund.amount == payment.captured_amount
    _apply(payment, "refund_fully" if full else "refund_partially", amount=refund.amount)
    events.on_refunded(payment, refund)
    metrics.refund_completed(payment, full=full)
    payment.save(update_fields=["state", "refunded_amount", "pms_writeback_status", "updated_at"])
    approver = approver or (Actor.staff(refund.approved_by) if refund.approved_by else None)
    # The refund is attributed to the person (or trigger) who asked for it; the
    # provider that confirmed it is recorded alongside.
    requester = (
        Actor.staff(refund.requested_by)
        if refund.requested_by
        else Actor.system(refund.requested_by_label)
    )
    _state_change(
        payment,
        requester,
        from_state,
        event_type=EventType.PAYMENT_REFUNDED if full else EventType.PAYMENT_PARTIALLY_REFUNDED,
        amount=refund.amount,
        reason_code=refund.reason_code,
        approver=approver,
        payload={
            "refund_id": str(refund.id),
            "original_transaction": refund.original_provider_reference,
            "original_method": refund.method,
            "refunded_total": str(payment.refunded_amount),
            "notes": refund.notes,
            "confirmed_by": f"{actor.kind}:{actor.id}",
        },
    )
    _sync_deposit(payment, actor)


@transaction.atomic
def refund_complete(*, refund_id, actor: Actor, provider_reference: str = "") -> Refund:
    """The provider confirmed the refund. A repeated confirmation changes nothing."""
    payment = lock_payment(Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id))
    refund = lock_refund(refund_id)
    if refund.status == Refund.Status.SUCCEEDED:
        return refund
    if refund.status == Refund.Status.FAILED:
        raise InvalidTransition("This refund already failed.")
    _refund_succeed(payment, refund, actor, provider_reference=provider_reference)
    return refund


@transaction.atomic
def refund_fail(*, refund_id, actor: Actor, reason: str) -> Refund:
    """The provider refused the refund: the reserved amount is released, the payment unchanged."""
    payment = lock_payment(Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id))
    refund = lock_refund(refund_id)
    if refund.status != Refund.Status.PENDING:
        return refund
    refund.status = Refund.Status.FAILED
    refund.failure_reason = reason[:255]
    refund.completed_at = timezone.now()
    refund.save(update_fields=["status", "failure_reason", "completed_at"])
    events.on_refund_failed(payment, refund)
    payment_audit_record(
        payment,
        actor,
        EventType.REFUND_FAILED,
        subject_type="refund",
        subject_id=str(refund.id),
        amount=refund.amount,
        reason_code=refund.reason_code,
        payload={"failure_reason": refund.failure_reason},
    )
    return refund


def _approval_create(
    payment: Payment, actor: Actor, amount: Decimal, reason_code: str, notes: str
) -> ApprovalRequest:
    approval = ApprovalRequest.objects.create(
        practice_id=payment.practice_id,
        site_id=payment.site_id,
        payment=payment,
        amount=amount,
        reason_code=reason_code,
        notes=notes,
        requested_by=actor.user,
        expires_at=timezone.now() + timedelta(hours=payment.practice.approval_request_ttl_hours),
    )
    _audit_approval(approval, EventType.APPROVAL_REQUIRED, actor)
    events.on_approval_required(approval)
    return approval


def _audit_approval(
    approval: ApprovalRequest, event_type: EventType, actor: Actor, *, approver: Actor | None = None
) -> None:
    audit_record(
        event_type=event_type,
        practice_id=approval.practice_id,
        actor=actor,
        site_id=approval.site_id,
        payment_id=approval.payment_id,
        subject_type="approval",
        subject_id=str(approval.id),
        amount=approval.amount,
        reason_code=approval.reason_code,
        approver=approver,
        payload={
            "action": approval.action,
            "status": approval.status,
            "note": approval.decision_note,
        },
    )


def _lock_pending_approval(approval_id, actor: Actor) -> tuple[Payment, ApprovalRequest]:
    payment = lock_payment(
        ApprovalRequest.objects.values_list("payment_id", flat=True).get(pk=approval_id)
    )
    approval = lock_approval(approval_id)
    access.require(
        actor.user, Perm.APPROVE_REFUND, practice_id=approval.practice_id, site_id=approval.site_id
    )
    if approval.requested_by_id == actor.user.pk:
        raise PaymentError("You cannot approve or deny your own request.", code="self_approval")
    if approval.status != ApprovalRequest.Status.PENDING:
        raise InvalidTransition(f"This request is already {approval.status}.")
    if approval.expires_at <= timezone.now():
        raise InvalidTransition("This request has expired.")
    return payment, approval


@transaction.atomic
def approval_grant(*, approval_id, actor: Actor, note: str = "") -> Refund:
    """A second person with the approver role grants the refund; it then runs as requested."""
    if not actor.is_staff:
        raise PaymentError("Only staff approve refunds.", code="permission_denied")
    payment, approval = _lock_pending_approval(approval_id, actor)
    access.require_recent_mfa(actor.user, payment.practice)
    available = payment.captured_amount - _reserved_refunds(payment)
    if payment.state not in REFUNDABLE_STATES or approval.amount > available:
        raise PaymentError(
            "The payment can no longer be refunded by this amount.", code="refund_exceeds_captured"
        )
    approval.status = ApprovalRequest.Status.GRANTED
    approval.decided_by = actor.user
    approval.decided_at = timezone.now()
    approval.decision_note = note
    requester = Actor.staff(approval.requested_by)
    _audit_approval(approval, EventType.APPROVAL_GRANTED, actor, approver=actor)
    refund = _refund_start(
        payment, requester, approval.amount, approval.reason_code, approval.notes, approver=actor
    )
    approval.refund = refund
    approval.save(update_fields=["status", "decided_by", "decided_at", "decision_note", "refund"])
    return refund


@transaction.atomic
def approval_deny(*, approval_id, actor: Actor, note: str = "") -> ApprovalRequest:
    if not actor.is_staff:
        raise PaymentError("Only staff deny refunds.", code="permission_denied")
    _payment, approval = _lock_pending_approval(approval_id, actor)
    approval.status = ApprovalRequest.Status.DENIED
    approval.decided_by = actor.user
    approval.decided_at = timezone.now()
    approval.decision_note = note
    approval.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
    _audit_approval(approval, EventType.APPROVAL_DENIED, actor, approver=actor)
    return approval


def approvals_expire(*, now=None) -> int:
    """Expire pending requests past their time; each in its own transaction. Changes no money."""
    now = now or timezone.now()
    expired = 0
    due = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING, expires_at__lte=now)
    for approval_id in due.values_list("id", flat=True).iterator():
        with transaction.atomic():
            approval = lock_approval(approval_id)
            if approval.status != ApprovalRequest.Status.PENDING:
                continue
            approval.status = ApprovalRequest.Status.EXPIRED
            approval.decided_at = now
            approval.save(update_fields=["status", "decided_at"])
            _audit_approval(approval, EventType.APPROVAL_EXPIRED, Actor.system("approval_expiry"))
            expired += 1
    return expired


# --- Due dates and procurement (system-initiated triggers, §4.6, §6.4) ----------


@transaction.atomic
def payment_set_due(*, payment_id, actor: Actor, due_at) -> Payment:
    """Give a requested payment its due date; unpaid after it, it becomes an overdue balance."""
    payment = lock_payment(payment_id)
    authorise(actor, Perm.INITIATE_PAYMENT, payment, refusal="This actor cannot set due dates.")
    if payment.is_procurement:
        raise PaymentError("Supplier payments have no due date here.", code="method_not_allowed")
    if timezone.is_naive(due_at):
        raise PaymentError("Due dates carry a time zone.", code="invalid_due_at", field="due_at")
    if payment.state not in (S.PROPOSED, S.INITIATED, S.AWAITING_CUSTOMER_ACTION):
        raise InvalidTransition("Only a payment not yet paid can be given a due date.")
    if payment.due_at != due_at:
        _write_due_date(payment, actor, due_at)
    return payment


def _write_due_date(payment: Payment, actor: Actor, due_at, **why) -> None:
    """Store and audit a payment's due date (the caller holds its lock); `why` adds to the event."""
    previous = payment.due_at
    payment.due_at = due_at
    payment.save(update_fields=["due_at", "updated_at"])
    payment_audit_record(
        payment,
        actor,
        EventType.PAYMENT_DUE_DATE_SET,
        payload={
            "due_at": due_at.isoformat(),
            "previous_due_at": previous.isoformat() if previous else None,
            **why,
        },
    )


@transaction.atomic
def payment_set_invoice_ref(*, payment_id, actor: Actor, pms_invoice_ref: str) -> list[Payment]:
    """Add the PMS invoice reference to a commerce order once it is fulfilled (§3.1, §13.2.2).

    A Product Shop order is paid before the PMS has an invoice for it. The
    reference is recorded on every payment (and split) of the order that has
    none yet; one already given is not changed. Nothing is written back to the
    PMS again: later writebacks (a refund) carry the reference.
    """
    reference = (pms_invoice_ref or "").strip()
    if not reference or len(reference) > 64:
        raise PaymentError(
            "Enter the PMS invoice reference (at most 64 characters).",
            code="invalid_reference",
            field="pms_invoice_ref",
        )
    payment = Payment.objects.filter(pk=payment_id).first()
    if payment is None:
        raise NotFound("No such payment.")
    # Every payment of the order, locked in primary-key order (this one among them).
    order = lock_payments(
        Payment.objects.filter(
            practice_id=payment.practice_id,
            target_type=payment.target_type,
            target_id=payment.target_id,
        ).values_list("pk", flat=True)
    )
    payment = next(p for p in order if p.pk == payment.pk)
    authorise(
        actor, Perm.INITIATE_PAYMENT, payment, refusal="This actor cannot set invoice references."
    )
    if payment.target_type != TargetType.COMMERCE_ORDER:
        raise PaymentError(
            "Only a commerce order gets its invoice reference after payment.",
            code="invalid_target",
            field="pms_invoice_ref",
        )
    if payment.pms_invoice_ref:
        if payment.pms_invoice_ref == reference:
            return []
        raise InvalidTransition(
            f"This order already has the invoice reference {payment.pms_invoice_ref}."
        )
    changed = [p for p in order if not p.pms_invoice_ref]
    split_ids = sorted({p.split_id for p in changed if p.split_id}, key=str)
    for split_id in split_ids:
        lock_split(split_id)
    SplitPayment.objects.filter(pk__in=split_ids, pms_invoice_ref="").update(
        pms_invoice_ref=reference
    )
    for each in changed:
        each.pms_invoice_ref = reference
        each.save(update_fields=["pms_invoice_ref", "updated_at"])
        payment_audit_record(
            each,
            actor,
            EventType.PAYMENT_INVOICE_REF_SET,
            payload={"pms_invoice_ref": reference, "commerce_order": each.target_id},
        )
    return changed


@transaction.atomic
def supplier_payment_create(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    purchase_order_id: str,
    supplier_invoice_id: str,
    amount,
    payment_profile_id: str,
    supplier_name: str = "",
) -> Payment:
    """The practice pays a supplier invoice Inventory & Compliance Manager has matched (§6.4).

    A procurement payment: no patient, target the supplier invoice, charged to
    the practice's own payment profile (card on file), started only by the
    Inventory trigger. Capture confirms it back to Inventory (events.on_captured).
    At most one live payment per supplier invoice: a failed or voided one may
    be replaced by a new signal.
    """
    if actor.kind != "system":
        raise PaymentError(
            "Supplier payments are started by Inventory & Compliance Manager only.",
            code="permission_denied",
        )
    amount = money(amount)
    if site.practice_id != practice.id:
        raise NotFound("No such site.")
    for field, value in (
        ("purchase_order_id", purchase_order_id),
        ("supplier_invoice_id", supplier_invoice_id),
        ("payment_profile_id", payment_profile_id),
    ):
        if not value or len(value) > 64:
            raise PaymentError(f"{field} is required.", code="invalid_reference", field=field)
    # One practice's procurement payments are started one at a time, so the
    # check below cannot race another signal for the same invoice.
    Practice.objects.select_for_update().get(pk=practice.pk)
    live = (
        SupplierPayment.objects.filter(practice=practice, supplier_invoice_id=supplier_invoice_id)
        .exclude(payment__state__in=[S.FAILED, S.VOIDED])
        .select_related("payment")
        .first()
    )
    if live is not None:
        raise InvalidTransition(
            f"Supplier invoice {supplier_invoice_id} already has a payment "
            f"({live.payment.get_state_display().lower()}).",
        )
    payment = Payment(
        practice=practice,
        site=site,
        patient=None,
        purpose=PaymentPurpose.PROCUREMENT,
        target_type=TargetType.INVOICE,
        target_id=supplier_invoice_id,
        method=PaymentMethod.CARD_ON_FILE,
        amount=amount,
        currency=practice.currency,
        provider=Provider.DNA,
        payment_profile_id=payment_profile_id,
        initiated_by_kind=InitiatorKind.SYSTEM,
        initiated_by_label=actor.label,
    )
    payment.save(force_insert=True)
    SupplierPayment.objects.create(
        practice=practice,
        site=site,
        payment=payment,
        purchase_order_id=purchase_order_id,
        supplier_invoice_id=supplier_invoice_id,
        supplier_name=supplier_name[:200],
    )
    _initiate(payment, actor)
    return payment
