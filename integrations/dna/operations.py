"""Run one ProviderOperation against DNA, with its idempotency key, and apply the answer.

Operations (ProviderOperation.operation):

- `terminal_sale`: send the axept transaction for a new terminal payment. A
  definite refusal fails the payment with a clear reason; an unknown outcome
  leaves the row pending and is never sent again: the next run *asks* DNA
  (GET /axept/transaction/{uti}) instead, since a resend could show the amount
  to a patient who has already walked away.
- `card_on_file_charge`: charge the stored card of a system-initiated card-on-file
  payment (its payment profile), resent with the same key while the outcome is unknown.
- `charge`: capture an authorisation (payments.services.payment_request_capture).
- `refund`: one Refund row (services.refund_request); succeeded → refund_complete,
  refused → refund_fail.
- `cancel`: reverse an authorisation or an unsettled charge after a void.

Unknown outcomes of charge, refund and cancel are sent again by the sweep with
the *same* key, which DNA answers with the first result instead of acting twice.
Rows are claimed with a lease (payments.services.provider_operation_claim), so
the after-commit task and the beat sweep never run one at the same time.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from integrations.dna import outcomes
from integrations.dna.client import (
    DnaClient,
    DnaConfigurationError,
    DnaOutcomeUnknown,
    DnaRefused,
)
from integrations.dna.types import TerminalSaleRequest, TerminalStatus
from integrations.dna.webhooks import terminal_webhook_url
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, ProviderOperation, Refund

log = structlog.get_logger("integrations.dna.operations")

S = PaymentState
OpStatus = ProviderOperation.Status
TERMINAL_SALE = "terminal_sale"
CARD_ON_FILE_CHARGE = "card_on_file_charge"


def lease_seconds() -> float:
    return float(getattr(settings, "DNA_OPERATION_LEASE_SECONDS", 60))


def execute(op_id: int, *, client: DnaClient | None = None) -> str:
    """One attempt at one operation; returns the operation's status afterwards."""
    op = services.provider_operation_claim(op_id=op_id, lease_seconds=lease_seconds())
    if op is None:
        return "skipped"
    runner = _RUNNERS.get(op.operation)
    if runner is None:
        log.error("provider_operation_unknown", operation=op.operation, op=op.pk)
        return op.status
    own_client = client is None
    dna = client or DnaClient()
    try:
        runner(op, dna)
    except DnaConfigurationError as error:
        _settle(op, OpStatus.PENDING, error=str(error))
        log.error("provider_operation_not_configured", op=op.pk, error=str(error))
    finally:
        if own_client:
            dna.close()
    op.refresh_from_db()
    log.info("provider_operation_run", op=op.pk, operation=op.operation, status=op.status)
    flag_after = getattr(settings, "DNA_OPERATION_FLAG_AFTER_ATTEMPTS", 8)
    if op.status == OpStatus.PENDING and op.attempts >= flag_after:
        # Still unknown after many tries: keep trying, and make sure a person knows.
        services.payment_flag_exception(
            payment_id=op.payment_id,
            actor=outcomes.PROVIDER,
            code="provider_outcome_unknown",
            detail=f"DNA has not confirmed {op.operation} after {op.attempts} attempts: "
            f"{op.last_error}",
            reference=op.idempotency_key,
        )
    return op.status


def _settle(op: ProviderOperation, status: str, *, reference: str = "", error: str = "") -> None:
    services.provider_operation_settle(
        op_id=op.pk, status=status, provider_reference=reference, error=error
    )


# --- terminal sale ------------------------------------------------------------------


def _terminal_sale(op: ProviderOperation, dna: DnaClient) -> None:
    payment = Payment.objects.select_related("terminal").get(pk=op.payment_id)
    if op.attempts > 1:
        resolve_terminal_sale(op, payment, dna)
        return
    if payment.state != S.INITIATED or payment.terminal is None:
        _settle(op, OpStatus.FAILED, error=f"not sent: the payment is {payment.state}")
        return
    request = TerminalSaleRequest(
        uti=str(payment.id),
        tid=payment.terminal.tid,
        amount=payment.charge_amount,
        currency=payment.currency,
        reference=terminal_reference(payment),
        webhook_url=terminal_webhook_url(),
        expires_at=timezone.now() + timedelta(seconds=settings.DNA_TERMINAL_TRANSACTION_SECONDS),
    )
    try:
        result = dna.terminal_sale(request, idempotency_key=op.idempotency_key)
    except DnaRefused as error:
        with transaction.atomic():
            _settle(op, OpStatus.FAILED, error=error.message)
            outcomes.fail(
                payment,
                code="terminal_refused" if error.code != "terminal_busy" else "terminal_busy",
                reason=f"The terminal did not accept the payment: {error.message}",
                reference="",
            )
        return
    except DnaOutcomeUnknown as error:
        _settle(op, OpStatus.PENDING, error=error.message)  # the janitor asks DNA
        return
    with transaction.atomic():
        _settle(op, OpStatus.SUCCEEDED, reference=result.uti)
        outcomes.apply_terminal(payment, result)


def resolve_terminal_sale(op: ProviderOperation, payment: Payment, dna: DnaClient) -> None:
    """An earlier send's outcome is unknown: ask DNA where the uti is, never resend."""
    try:
        result = dna.terminal_status(str(payment.id))
    except (DnaOutcomeUnknown, DnaRefused) as error:
        _settle(op, OpStatus.PENDING, error=error.message)
        return
    with transaction.atomic():
        if result.status == TerminalStatus.UNKNOWN:
            _settle(op, OpStatus.FAILED, error="DNA has no such transaction: nothing was sent")
        else:
            _settle(op, OpStatus.SUCCEEDED, reference=result.uti)
        outcomes.apply_terminal(payment, result)


def terminal_reference(payment: Payment) -> str:
    """The axept reference (≤ 50 letters and digits): the payment id's hex, no personal data."""
    return payment.id.hex


# --- charge, refund, cancel -------------------------------------------------------------


def _charge(op: ProviderOperation, dna: DnaClient) -> None:
    payment = Payment.objects.get(pk=op.payment_id)
    if payment.state not in (S.AUTHORISED,):
        if payment.is_paid:
            _settle(op, OpStatus.SUCCEEDED, error="already captured")
        else:
            _settle(op, OpStatus.FAILED, error=f"not sent: the payment is {payment.state}")
        return
    try:
        result = dna.charge(
            transaction_id=payment.provider_reference,
            amount=payment.charge_amount,
            idempotency_key=op.idempotency_key,
        )
    except DnaRefused as error:
        _settle(op, OpStatus.FAILED, error=error.message)
        services.payment_flag_exception(
            payment_id=payment.id,
            actor=outcomes.PROVIDER,
            code="capture_refused",
            detail=f"DNA refused the capture: {error.message}",
            reference=payment.provider_reference,
        )
        return
    except DnaOutcomeUnknown as error:
        _settle(op, OpStatus.PENDING, error=error.message)
        return
    with transaction.atomic():
        _settle(op, OpStatus.SUCCEEDED, reference=result.id)
        outcomes.capture(payment, amount=result.amount, reference=payment.provider_reference)


def _card_on_file_charge(op: ProviderOperation, dna: DnaClient) -> None:
    """Charge the stored card a system trigger named (its payment profile), once.

    The same idempotency key on every attempt, so an unknown outcome is sent
    again safely; DNA answers a repeat with the first result.
    """
    payment = Payment.objects.select_related("practice").get(pk=op.payment_id)
    if payment.state != S.INITIATED:
        done = payment.is_paid
        _settle(
            op,
            OpStatus.SUCCEEDED if done else OpStatus.FAILED,
            error=f"not sent: the payment is {payment.state}",
        )
        return
    try:
        result = dna.charge_stored_card(
            invoice_id=str(payment.id),
            amount=payment.charge_amount,
            currency=payment.currency,
            terminal_id=payment.practice.dna_terminal_id or settings.DNA_TERMINAL_ID,
            card_token=payment.payment_profile_id,
            idempotency_key=op.idempotency_key,
        )
    except DnaRefused as error:
        with transaction.atomic():
            _settle(op, OpStatus.FAILED, error=error.message)
            outcomes.fail(
                payment,
                code="declined",
                reason=f"The stored card was not charged: {error.message}",
                reference="",
            )
        return
    except DnaOutcomeUnknown as error:
        _settle(op, OpStatus.PENDING, error=error.message)
        return
    with transaction.atomic():
        _settle(op, OpStatus.SUCCEEDED, reference=result.id)
        outcomes.capture(payment, amount=result.amount, reference=result.id)


def _refund(op: ProviderOperation, dna: DnaClient) -> None:
    refund = Refund.objects.select_related("payment").get(idempotency_key=op.idempotency_key)
    if refund.status != Refund.Status.PENDING:
        done = refund.status == Refund.Status.SUCCEEDED
        _settle(op, OpStatus.SUCCEEDED if done else OpStatus.FAILED, error="already settled")
        return
    transaction_id = refund.original_provider_reference or refund.payment.provider_reference
    try:
        result = dna.refund(
            transaction_id=transaction_id,
            amount=refund.amount,
            reason=refund.reason_code,
            idempotency_key=op.idempotency_key,
        )
    except DnaRefused as error:
        with transaction.atomic():
            _settle(op, OpStatus.FAILED, error=error.message)
            services.refund_fail(
                refund_id=refund.id, actor=outcomes.PROVIDER, reason=f"DNA: {error.message}"
            )
        return
    except DnaOutcomeUnknown as error:
        _settle(op, OpStatus.PENDING, error=error.message)
        return
    with transaction.atomic():
        _settle(op, OpStatus.SUCCEEDED, reference=result.id)
        services.refund_complete(
            refund_id=refund.id, actor=outcomes.PROVIDER, provider_reference=result.id
        )


def _cancel_target(payment: Payment, dna: DnaClient) -> tuple[str | None, bool]:
    """(DNA transaction to cancel, still undecided) for a voided payment."""
    if payment.provider_reference:
        return payment.provider_reference, False
    if payment.method == PaymentMethod.TERMINAL:
        status = dna.terminal_status(str(payment.id))
        if status.status == TerminalStatus.PENDING:
            return None, True  # still on the terminal: ask again later
        if status.status == TerminalStatus.APPROVED and status.transaction_id:
            return status.transaction_id, False
        return None, False
    live = [
        t
        for t in dna.transactions(str(payment.id))
        if t.transaction_type != "REFUND" and t.status in ("AUTH", "CHARGE")
    ]
    return (live[0].id if live else None), False


def _cancel(op: ProviderOperation, dna: DnaClient) -> None:
    payment = Payment.objects.get(pk=op.payment_id)
    try:
        target, undecided = _cancel_target(payment, dna)
        if undecided:
            _settle(op, OpStatus.PENDING, error="the terminal is still showing the payment")
            return
        if target is None:
            _settle(op, OpStatus.SUCCEEDED, error="nothing to cancel at DNA")
            return
        result = dna.cancel(transaction_id=target, idempotency_key=op.idempotency_key)
    except DnaRefused as error:
        with transaction.atomic():
            _settle(op, OpStatus.FAILED, error=error.message)
            services.payment_flag_exception(
                payment_id=payment.id,
                actor=outcomes.PROVIDER,
                code="cancel_refused",
                detail=f"The payment was voided here but DNA refused to cancel it: {error.message}",
                reference=payment.provider_reference,
            )
        return
    except DnaOutcomeUnknown as error:
        _settle(op, OpStatus.PENDING, error=error.message)
        return
    _settle(op, OpStatus.SUCCEEDED, reference=result.id)


_RUNNERS = {
    TERMINAL_SALE: _terminal_sale,
    CARD_ON_FILE_CHARGE: _card_on_file_charge,
    "charge": _charge,
    "refund": _refund,
    "cancel": _cancel,
}
