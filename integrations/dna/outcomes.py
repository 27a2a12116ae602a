"""Apply what DNA says about a payment, through payments.services, never by guessing.

Shared by the webhook handlers, the provider-operation task and the janitor, so
a fact has the same effect whichever way it arrives. The rules:

- A repeated fact changes nothing (the services are idempotent for a repeated
  outcome).
- A late weaker fact is harmless: "authorised" after "captured" is a no-op, and
  a decline of an *earlier* attempt (another transaction id) after a capture
  is ignored.
- A contradiction is flagged, not applied: a decline of the very transaction we
  captured, a charge for a payment we failed or voided, a second charge, an
  amount that differs from what we asked. `payment_flag_exception` audits it and
  gives finance staff a task; the webhook event is kept as "unmatched".
- A virtual-terminal payment's session is closed (call recording unmuted) when
  its outcome arrives, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import structlog

from audit.actors import Actor
from integrations.dna.types import TerminalStatus, TerminalTransaction, Transaction
from integrations.models import WebhookEvent
from payments import services
from payments.errors import PaymentError
from payments.models import PAID_STATES, Payment, PaymentMethod, PaymentState

log = structlog.get_logger("integrations.dna.outcomes")

S = PaymentState
PROVIDER = Actor.provider("dna")
Status = WebhookEvent.Status


@dataclass(frozen=True)
class Applied:
    """What applying a fact did, in the webhook pipeline's terms."""

    status: str
    note: str = ""


def _refresh(payment: Payment) -> Payment:
    return Payment.objects.get(pk=payment.pk)


def _flag(payment: Payment, code: str, detail: str, reference: str = "") -> Applied:
    services.payment_flag_exception(
        payment_id=payment.id, actor=PROVIDER, code=code, detail=detail, reference=reference
    )
    log.warning("dna_outcome_flagged", payment=str(payment.id), code=code)
    return Applied(Status.UNMATCHED, f"{code}: {detail}")


def _close_virtual_terminal(payment: Payment) -> None:
    if payment.method == PaymentMethod.VIRTUAL_TERMINAL:
        from payments.flows import virtual_terminal_close

        virtual_terminal_close(payment_id=payment.id, actor=PROVIDER, reason="completed")


def capture(
    payment: Payment, *, amount: Decimal | None, reference: str | None, actor: Actor = PROVIDER
) -> Applied:
    payment = _refresh(payment)
    reference = reference or ""
    if payment.state in PAID_STATES:
        if not reference or reference == payment.provider_reference:
            return Applied(Status.PROCESSED, "already captured")
        return _flag(
            payment,
            "second_charge",
            f"DNA charged transaction {reference} for a payment already captured as "
            f"{payment.provider_reference}: refund one of them.",
            reference,
        )
    if payment.state in (S.FAILED, S.VOIDED):
        return _flag(
            payment,
            f"charge_after_{payment.state}",
            f"DNA charged transaction {reference} for a payment that is {payment.state}: "
            "refund it or reinstate the payment by hand.",
            reference,
        )
    if amount is not None and amount != payment.charge_amount:
        return _flag(
            payment,
            "amount_mismatch",
            f"DNA charged {amount} but {payment.charge_amount} was asked.",
            reference,
        )
    try:
        services.payment_capture(
            payment_id=payment.id, actor=actor, amount=amount, provider_reference=reference
        )
    except PaymentError as error:
        return _flag(payment, error.code, error.message, reference)
    _close_virtual_terminal(payment)
    return Applied(Status.PROCESSED, "captured")


def authorise(payment: Payment, *, reference: str, actor: Actor = PROVIDER) -> Applied:
    payment = _refresh(payment)
    if payment.state in PAID_STATES:
        return Applied(Status.PROCESSED, "late authorisation after capture: no effect")
    if payment.state in (S.FAILED, S.VOIDED):
        if payment.state == S.VOIDED and payment.operations.filter(operation="cancel").exists():
            return Applied(Status.IGNORED, "authorisation of a voided payment being cancelled")
        return _flag(
            payment,
            f"authorised_after_{payment.state}",
            f"DNA authorised transaction {reference} for a payment that is {payment.state}.",
            reference,
        )
    try:
        services.payment_authorise(payment_id=payment.id, actor=actor, provider_reference=reference)
    except PaymentError as error:
        return _flag(payment, error.code, error.message, reference)
    _close_virtual_terminal(payment)
    return Applied(Status.PROCESSED, "authorised")


def fail(
    payment: Payment, *, code: str, reason: str, reference: str, actor: Actor = PROVIDER
) -> Applied:
    payment = _refresh(payment)
    if payment.state == S.FAILED:
        return Applied(Status.PROCESSED, "already failed")
    if payment.state == S.VOIDED:
        return Applied(Status.IGNORED, f"{code} for a voided payment: no effect")
    if payment.state in PAID_STATES or payment.state == S.AUTHORISED:
        if reference and reference == payment.provider_reference:
            return _flag(
                payment,
                f"{code}_after_{payment.state}",
                f"DNA reports {code} for transaction {reference}, which is {payment.state} here.",
                reference,
            )
        return Applied(
            Status.IGNORED, f"{code} of an earlier attempt; the payment is {payment.state}"
        )
    services.payment_fail(
        payment_id=payment.id,
        actor=actor,
        code=code,
        reason=reason,
        provider_reference=reference,
    )
    _close_virtual_terminal(payment)
    return Applied(Status.PROCESSED, f"failed: {code}")


# --- terminal ---------------------------------------------------------------------

_TERMINAL_FAILURES = {
    TerminalStatus.DECLINED: ("declined", "The card was declined at the terminal."),
    TerminalStatus.CANCELLED: ("customer_cancelled", "The payment was cancelled on the terminal."),
    TerminalStatus.TIMED_OUT: (
        "provider_timeout",
        "The terminal timed out before a card was presented. Retry the payment.",
    ),
    TerminalStatus.UNKNOWN: (
        "provider_unavailable",
        "The terminal never received the payment. Retry the payment.",
    ),
}


def apply_terminal(
    payment: Payment, result: TerminalTransaction, *, actor: Actor = PROVIDER
) -> Applied:
    """A terminal transaction's status (webhook or look-up) applied to its payment."""
    if result.reference and result.reference != payment.id.hex:
        return _flag(
            payment,
            "reference_mismatch",
            f"Terminal result {result.uti} carries reference {result.reference}.",
        )
    if result.status == TerminalStatus.PENDING:
        if payment.state == S.INITIATED:
            services.payment_await_customer(payment_id=payment.id, actor=actor)
            return Applied(Status.PROCESSED, "awaiting the customer at the terminal")
        return Applied(Status.PROCESSED, "still pending at the terminal")
    if result.status == TerminalStatus.APPROVED:
        return capture(payment, amount=result.amount, reference=result.transaction_id, actor=actor)
    code, reason = _TERMINAL_FAILURES[result.status]
    current = _refresh(payment)
    if current.state in PAID_STATES:
        # One uti is one terminal transaction: a failure after its approval contradicts it.
        return _flag(
            current,
            f"{code}_after_{current.state}",
            f"The terminal reports {result.status} for a payment captured as "
            f"{current.provider_reference}.",
            result.transaction_id or result.uti,
        )
    if result.message and result.status == TerminalStatus.DECLINED:
        reason = f"{reason} ({result.message})"
    return fail(
        payment, code=code, reason=reason, reference=result.transaction_id or "", actor=actor
    )


# --- online (hosted checkout, pay-by-link, virtual terminal) -------------------------


def apply_transactions(
    payment: Payment, transactions: list[Transaction], *, actor: Actor = PROVIDER
) -> Applied | None:
    """DNA's transactions for the payment's invoiceId; None when DNA has none (nothing happened)."""
    sales = [t for t in transactions if t.transaction_type != "REFUND" and not t.parent_id]
    if not sales:
        return None
    for status in ("CHARGE", "AUTH"):
        matching = [t for t in sales if t.status == status]
        if payment.provider_reference:
            matching.sort(key=lambda t: t.id != payment.provider_reference)
        if matching:
            found = matching[0]
            if status == "CHARGE":
                return capture(
                    payment, amount=found.charged_amount, reference=found.id, actor=actor
                )
            return authorise(payment, reference=found.id, actor=actor)
    if any(t.status == "CANCEL" for t in sales):
        cancelled = next(t for t in sales if t.status == "CANCEL")
        return fail(
            payment,
            code="authorisation_cancelled",
            reason="DNA reports the authorisation as cancelled.",
            reference=cancelled.id,
            actor=actor,
        )
    declined = sales[-1]
    return fail(
        payment,
        code="declined",
        reason="The card payment was declined.",
        reference=declined.id,
        actor=actor,
    )
