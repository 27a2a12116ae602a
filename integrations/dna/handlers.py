"""Process stored DNA webhook events (registered in integrations.dna.apps for "dna" and "dna_terminal").

Each handler runs in the webhook task, inside a transaction holding the event's
row lock (integrations.webhooks.webhook_event_process). It turns the stored,
already verified and card-stripped body into a typed fact, finds the payment by
our own id (invoiceId / uti = payment id; the terminal reference is the id's
hex), and applies the fact through integrations.dna.outcomes. An event for a
payment we do not know is kept as unmatched, with the practice the DNA terminal
id names (integrations.dna.selectors): a terminal result carries its tid; for a
callback we ask DNA which terminal took the invoice (a failed look-up is retried).
"""

from __future__ import annotations

import uuid

import structlog

from integrations.dna.client import (
    DnaClient,
    DnaError,
    DnaSettings,
    terminal_transaction,
    text,
    to_amount,
)
from integrations.dna.outcomes import Applied, apply_terminal, authorise, capture, fail
from integrations.dna.selectors import owner_from_dna, owner_of_terminal_id
from integrations.dna.types import PaymentCallback
from integrations.models import WebhookEvent
from integrations.webhooks import HandlerResult, RetryableWebhookError
from payments.models import Payment, PaymentMethod, Provider

log = structlog.get_logger("integrations.dna.handlers")

Status = WebhookEvent.Status


def payment_for_reference(reference: str) -> Payment | None:
    """Our payment for a DNA invoiceId / uti / terminal reference (the payment id, any form)."""
    try:
        payment_id = uuid.UUID(str(reference).strip())
    except ValueError:
        return None
    return Payment.objects.filter(pk=payment_id, provider=Provider.DNA).first()


def parse_callback(body: dict) -> PaymentCallback:
    return PaymentCallback(
        transaction_id=text(body.get("id")),
        invoice_id=text(body.get("invoiceId")),
        amount=to_amount(body.get("amount")),
        currency=text(body.get("currency")),
        success=body.get("success") is True,
        settled=body.get("settled") is True,
        error_code=text(body.get("errorCode")),
        message=text(body.get("message")),
        payment_method=text(body.get("paymentMethod")),
        card_scheme=text(body.get("cardSchemeName")),
        rrn=text(body.get("rrn")),
    )


def _result(applied: Applied, payment: Payment) -> HandlerResult:
    return HandlerResult(
        status=applied.status,
        payment_id=payment.id,
        practice_id=payment.practice_id,
        note=applied.note,
    )


def handle_callback(event: WebhookEvent) -> HandlerResult:
    """A hosted-checkout callback: charged, authorised or declined."""
    try:
        callback = parse_callback(event.body)
    except DnaError as error:
        return HandlerResult(status=Status.UNMATCHED, note=f"unreadable callback: {error}")
    payment = payment_for_reference(callback.invoice_id)
    if payment is None or payment.method == PaymentMethod.TERMINAL:
        log.warning("dna_callback_unmatched", invoice=callback.invoice_id)
        return HandlerResult(
            status=Status.UNMATCHED,
            practice_id=payment.practice_id if payment else _owner_from_dna(callback.invoice_id),
            note=f"No payment for invoiceId {callback.invoice_id!r}.",
        )
    if callback.currency != payment.currency:
        applied = Applied(
            Status.UNMATCHED, f"currency {callback.currency} differs from {payment.currency}"
        )
        return _result(applied, payment)
    if callback.outcome == "charged":
        applied = capture(payment, amount=callback.amount, reference=callback.transaction_id)
    elif callback.outcome == "authorised":
        applied = authorise(payment, reference=callback.transaction_id)
    else:
        reason = "The card payment was declined."
        if callback.message:
            reason = f"{reason} ({callback.message})"
        applied = fail(payment, code="declined", reason=reason, reference=callback.transaction_id)
    return _result(applied, payment)


def handle_terminal_result(event: WebhookEvent) -> HandlerResult:
    """An axept Connect result: approved, declined or cancelled at the terminal."""
    try:
        result = terminal_transaction(event.body)
    except DnaError as error:
        return HandlerResult(status=Status.UNMATCHED, note=f"unreadable terminal result: {error}")
    payment = payment_for_reference(result.uti)
    if payment is None or payment.method != PaymentMethod.TERMINAL:
        practice, _site = owner_of_terminal_id(result.tid)
        log.warning("dna_terminal_unmatched", uti=result.uti, tid=result.tid)
        return HandlerResult(
            status=Status.UNMATCHED,
            practice_id=practice.id if practice else None,
            note=f"No terminal payment for uti {result.uti!r}.",
        )
    return _result(apply_terminal(payment, result), payment)


def _owner_from_dna(invoice_id: str):
    """The practice whose DNA terminal took this unknown invoice; DNA unreachable → retry later."""
    try:
        with DnaClient(config=DnaSettings.for_lookups()) as dna:
            practice, _site = owner_from_dna(invoice_id, dna)
    except DnaError as error:
        raise RetryableWebhookError(f"DNA look-up of {invoice_id!r} failed: {error}") from error
    return practice.id if practice else None


def practice_for_event(event: WebhookEvent):
    """The practice of a stored DNA event from our own records (for a parked event's task)."""
    if event.practice_id:
        return event.practice_id
    body = event.body if isinstance(event.body, dict) else {}
    reference = event.resource_ref or text(body.get("invoiceId") or body.get("uti"))
    payment = payment_for_reference(reference)
    if payment is not None:
        return payment.practice_id
    practice, _site = owner_of_terminal_id(text(body.get("tid")))
    return practice.id if practice else None
