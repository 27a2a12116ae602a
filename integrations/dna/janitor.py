"""The janitor: no DNA payment stays stuck because an answer was lost.

Runs from beat (integrations.dna.tasks.janitor). Each pass, within
DNA_JANITOR_TIME_BUDGET_SECONDS (kept below the task's soft time limit):

1. runs every pending ProviderOperation nobody is working on (a lost task, or
   an unknown outcome to send again with the same key / ask about);
2. closes virtual-terminal sessions left open longer than
   DNA_VIRTUAL_TERMINAL_ABANDON_SECONDS (call recording resumes);
3. asks DNA about payments sitting in initiated, awaiting_customer_action or
   authorised for longer than DNA_JANITOR_STALE_SECONDS, at most
   DNA_JANITOR_BATCH of them, those whose `next_check_at` is due, never
   checked first; and applies the answer through payments.services:
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

A payment still waiting gets a `next_check_at`: later the longer it has waited
(half its wait, at most DNA_JANITOR_RECHECK_CAP_SECONDS, a little jitter), a
full cap away when it waits by design (authorised awaiting capture, a link
still active), and never past the moment something is due (a checkout's
abandonment, a link's expiry). So payments that legitimately wait cannot fill
the batch and starve a newer stuck one. Each look-up has its own time bound
(DNA_LOOKUP_TIMEOUT_SECONDS, no retries: the next pass asks again); a
look-up that fails changes nothing but the payment's next check, and the pass
stops taking payments when the budget could not cover another look-up.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import DatabaseError
from django.db.models import F, Q
from django.utils import timezone

from audit.actors import Actor
from integrations.dna import operations, outcomes
from integrations.dna.client import DnaClient, DnaError, DnaSettings
from integrations.dna.outcomes import Applied
from payments.errors import PaymentError
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


@dataclass
class JanitorStats:
    operations: int = 0
    sessions_closed: int = 0
    asked: int = 0
    deferred: bool = False
    resolved: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "operations": self.operations,
            "sessions_closed": self.sessions_closed,
            "asked": self.asked,
            "deferred": self.deferred,
            "resolved": self.resolved,
        }


def candidates(now: datetime) -> list[Payment]:
    """The payments to ask about in this pass: due ones, never-checked first."""
    stale = now - timedelta(seconds=settings.DNA_JANITOR_STALE_SECONDS)
    return list(
        Payment.objects.filter(provider=Provider.DNA, state__in=STUCK_STATES, updated_at__lte=stale)
        .filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now))
        .select_related("terminal")
        .order_by(F("next_check_at").asc(nulls_first=True), "updated_at")[
            : settings.DNA_JANITOR_BATCH
        ]
    )


def run(*, now=None, client: DnaClient | None = None) -> JanitorStats:
    from payments import flows, services

    now = now or timezone.now()
    deadline = time.monotonic() + settings.DNA_JANITOR_TIME_BUDGET_SECONDS
    stats = JanitorStats()
    own_client = client is None
    dna = client or DnaClient()
    lookups = client or DnaClient(config=DnaSettings.for_lookups())
    # A token request and the look-up itself: what one payment may take at worst.
    per_payment = 2 * (lookups.config.connect_timeout + lookups.config.read_timeout)
    try:
        for op_id in services.provider_operations_due(
            lease_seconds=operations.lease_seconds(), now=now
        ):
            if time.monotonic() >= deadline:
                stats.deferred = True
                break
            operations.execute(op_id, client=dna)
            stats.operations += 1
        stats.sessions_closed = flows.virtual_terminal_close_abandoned(actor=JANITOR, now=now)
        for payment in candidates(now):
            if time.monotonic() + per_payment > deadline:
                stats.deferred = True  # the rest come first in the next pass
                break
            applied = _check(payment, client=lookups, now=now)
            stats.asked += 1
            if applied is not None:
                stats.resolved[applied.note] = stats.resolved.get(applied.note, 0) + 1
    finally:
        if own_client:
            dna.close()
            lookups.close()
    log.info("dna_janitor", **stats.as_dict())
    return stats


def _check(payment: Payment, *, client: DnaClient, now: datetime) -> Applied | None:
    """Resolve one payment; whatever happens, the others in the pass still get their turn."""
    try:
        applied = resolve_payment(payment, client=client, now=now)
    except (PaymentError, DatabaseError) as error:
        log.error(
            "dna_janitor_payment_failed",
            payment=str(payment.id),
            error_type=type(error).__name__,
            error=str(error)[:300],
        )
        applied = None
    _schedule(payment.pk, now)  # still waiting (e.g. authorised, awaiting capture): ask later
    return applied


def _schedule(payment_id, now: datetime) -> None:
    """Set when to ask again. A scheduling note, not a state change: `updated_at` is untouched."""
    payment = Payment.objects.select_related("terminal").filter(pk=payment_id).first()
    if payment is None or payment.state not in STUCK_STATES:
        return
    Payment.objects.filter(pk=payment_id).update(next_check_at=next_check(payment, now))


def next_check(payment: Payment, now: datetime) -> datetime:
    """When to ask DNA again about a payment still waiting (see the module docstring)."""
    cap = float(settings.DNA_JANITOR_RECHECK_CAP_SECONDS)
    floor = min(cap, max(float(settings.DNA_JANITOR_STALE_SECONDS), 30.0))
    waited = max((now - payment.updated_at).total_seconds(), 0.0)
    delay = min(cap, max(floor, waited / 2)) * random.uniform(0.8, 1.0)  # noqa: S311 - jitter
    abandon = timedelta(seconds=settings.DNA_CHECKOUT_ABANDON_SECONDS)
    due_moments = []
    if payment.state == S.AUTHORISED:
        delay = cap  # waits for staff to capture; DNA is asked now and then, in case
    elif payment.method == PaymentMethod.PAY_BY_LINK:
        link = PaymentLink.objects.filter(payment=payment).first()
        if link is not None:
            if link.effective_status(now) == PaymentLink.Status.ACTIVE:
                delay = cap  # the patient has until the link expires
            due_moments += [link.expires_at, link.expires_at + abandon]
    elif payment.method != PaymentMethod.TERMINAL:
        due_moments.append(payment.updated_at + abandon)
    at = now + timedelta(seconds=delay)
    upcoming = [moment for moment in due_moments if moment > now]
    return min([at, *upcoming])


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
