"""Disputes and chargebacks reported by a provider: the payment becomes an exception (§5.4).

The provider's webhook handler (DNA Payments) calls `payment_flag_dispute`;
the payment is flagged `disputed`, the flag is audited and a Task Manager task
is written in the same transaction. The lifecycle state is not changed: a
dispute is a condition on a captured payment, not a state of §3.2. Staff find
it among `payments.selectors.payment_exceptions`.
"""

from __future__ import annotations

from django.db import transaction

from audit.actors import Actor
from audit.models import EventType
from payments import events
from payments.errors import PaymentError
from payments.locks import lock_payment
from payments.models import Payment
from payments.permissions import authorise
from payments.services import Outcome, payment_audit_record
from practices.roles import Perm


@transaction.atomic
def payment_flag_dispute(
    *, payment_id, actor: Actor, reason: str, provider_reference: str = ""
) -> Outcome:
    """Flag a payment as disputed (chargeback, retrieval request ...). A repeat changes nothing."""
    payment: Payment = lock_payment(payment_id)
    authorise(
        actor,
        Perm.MANAGE_EXCEPTIONS,
        payment,
        refusal="This actor cannot flag disputes.",
        also=("provider", "system"),
    )
    reason = (reason or "").strip()[:255]
    if not reason:
        raise PaymentError("A dispute needs its reason.", code="reason_required", field="reason")
    if payment.disputed:
        return Outcome(payment, changed=False)
    payment.disputed = True
    payment.save(update_fields=["disputed", "updated_at"])
    payment_audit_record(
        payment,
        actor,
        EventType.PAYMENT_EXCEPTION_FLAGGED,
        payload={
            "exception": "disputed",
            "reason": reason,
            "dispute_reference": provider_reference[:128],
            "state": payment.state,
        },
    )
    events.on_dispute_flagged(payment, reason=reason, provider_reference=provider_reference[:128])
    return Outcome(payment, changed=True)
