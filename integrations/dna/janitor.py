"""The janitor: no DNA payment stays stuck because an answer was lost.

Runs from beat (integrations.dna.tasks.janitor). Each pass:

1. runs every pending ProviderOperation nobody is working on (a lost task, or
   an unknown outcome to send again with the same key / ask about);
2. asks DNA about payments sitting in initiated, awaiting_customer_action or
   authorised for longer than DNA_JANITOR_STALE_SECONDS, and applies the answer
   through payments.services:
   - terminal payments: GET /axept/transaction/{uti}. approved → captured;
     declined / cancelled → failed; timed_out → failed (provider_timeout) with
     the retry path; unknown (DNA never got it) → failed (provider_unavailable);
     pending → wait.
   - online, pay-by-link and virtual-terminal payments: GET
     /v2/transactions/{invoiceId}/list. A charge → captured, an authorisation →
     authorised, only declines → failed. Nothing at all means nothing happened:
     a pay-by-link payment fails (link_expired) once its link has expired; an
     online or virtual-terminal checkout fails (checkout_abandoned) once its
     token has certainly expired (DNA_CHECKOUT_ABANDON_SECONDS).

A look-up that fails changes nothing: the next pass asks again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from django.conf import settings
from django.utils import timezone

from audit.actors import Actor
from integrations.dna import operations, outcomes
from integrations.dna.client import DnaClient, DnaError
from integrations.dna.outcomes import Applied
from payments.models import (
    Payment,
    PaymentLink,
    PaymentMethod,
    PaymentState,
    Provider,
    ProviderOperation,
)

log = structlog.get_logger("integrations.dna.janitor")

S = PaymentState
STUCK_STATES = (S.INITIATED, S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED)
JANITOR = Actor.system("dna_janitor")
BATCH = 200


@dataclass
class JanitorStats:
    operations: int = 0
    asked: int = 0
    resolved: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"operations": self.operations, "asked": self.asked, "resolved": self.resolved}


def run(*, now=None, client: DnaClient | None = None) -> JanitorStats:
    from payments import services

    now = now or timezone.now()
    stats = JanitorStats()
    own_client = client is None
    dna = client or DnaClient()
    try:
        for op_id in services.provider_operations_due(
            lease_seconds=operations.lease_seconds(), now=now
        ):
            operations.execute(op_id, client=dna)
            stats.operations += 1
        stale = now - timedelta(seconds=settings.DNA_JANITOR_STALE_SECONDS)
        candidates = (
            Payment.objects.filter(
                provider=Provider.DNA, state__in=STUCK_STATES, updated_at__lte=stale
            )
            .select_related("terminal")
            .order_by("updated_at")[:BATCH]
        )
        for payment in candidates:
            applied = resolve_payment(payment, client=dna, now=now)
            stats.asked += 1
            if applied is not None:
                stats.resolved[applied.note] = stats.resolved.get(applied.note, 0) + 1
    finally:
        if own_client:
            dna.close()
    log.info("dna_janitor", **stats.as_dict())
    return stats


def _operation_in_flight(payment: Payment) -> bool:
    """A terminal sale still pending is the operation sweep's to resolve, not ours."""
    return payment.operations.filter(
        operation=operations.TERMINAL_SALE, status=ProviderOperation.Status.PENDING
    ).exists()


def resolve_payment(payment: Payment, *, client: DnaClient, now=None) -> Applied | None:
    """Ask DNA about one payment and apply the answer; None when there is nothing to do yet."""
    now = now or timezone.now()
    payment = Payment.objects.select_related("terminal").get(pk=payment.pk)
    if payment.state not in STUCK_STATES:
        return None
    try:
        if payment.method == PaymentMethod.TERMINAL:
            if payment.state == S.INITIATED and _operation_in_flight(payment):
                return None
            result = client.terminal_status(str(payment.id))
            return outcomes.apply_terminal(payment, result, actor=JANITOR)
        transactions = client.transactions(str(payment.id))
    except DnaError as error:
        log.warning("dna_janitor_lookup_failed", payment=str(payment.id), error=error.message)
        return None
    applied = outcomes.apply_transactions(payment, transactions, actor=JANITOR)
    if applied is not None or payment.state == S.AUTHORISED:
        return applied
    return _nothing_happened(payment, now)


def _nothing_happened(payment: Payment, now) -> Applied | None:
    """DNA holds no transaction for this payment: fail it once nothing more can happen.

    A checkout token lives at most DNA_CHECKOUT_ABANDON_SECONDS, so a checkout
    opened just before a link expired can still be paid for that long after.
    """
    abandon_after = timedelta(seconds=settings.DNA_CHECKOUT_ABANDON_SECONDS)
    if payment.method == PaymentMethod.PAY_BY_LINK:
        link = PaymentLink.objects.filter(payment=payment).first()
        if link is not None:
            if link.effective_status(now) == PaymentLink.Status.ACTIVE:
                return None
            if link.status == PaymentLink.Status.ACTIVE:
                from payments.links import payment_link_expire

                payment_link_expire(link_id=link.id, actor=JANITOR)
            if link.expires_at > now - abandon_after:
                return None
            return outcomes.fail(
                payment,
                code="link_expired",
                reason="The payment link expired without a payment.",
                reference="",
                actor=JANITOR,
            )
    if payment.updated_at > now - abandon_after:
        return None
    return outcomes.fail(
        payment,
        code="checkout_abandoned",
        reason="The checkout was not completed and DNA holds no payment for it.",
        reference="",
        actor=JANITOR,
    )
