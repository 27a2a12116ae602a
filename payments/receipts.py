"""Receipts (§5.1): what the patient's receipt says, where it stands, and sending it again.

Communication Hub sends receipts, app first, then email or SMS. Its contract
(docs/contracts.md) answers 2xx when it has stored the message and reports no
channel back, so all we can say about a receipt is whether our message is
queued, delivered to Communication Hub, or failed; the portal never claims a
channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet

from audit.actors import Actor
from audit.models import EventType
from integrations.models import Destination, OutboxMessage
from payments import communications, events
from payments.errors import PaymentError
from payments.locks import lock_payment
from payments.models import PAID_STATES, Payment, PaymentState, SplitPayment
from payments.permissions import authorise
from payments.services import payment_audit_record
from practices.roles import Perm

S = PaymentState
CAN_RESEND = (S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.RECONCILED)


@dataclass(frozen=True)
class ReceiptMessage:
    """One receipt message as staff see it (worded as in the communications log)."""

    message: OutboxMessage

    @property
    def kind(self) -> str:
        return communications.receipt_kind(self.message.payload)

    @property
    def delivery(self) -> str:
        return communications.delivery_label(self.message)

    @property
    def delivered(self) -> bool:
        return self.message.status == OutboxMessage.Status.DELIVERED


def receipt_messages(payment: Payment) -> list[ReceiptMessage]:
    """The receipt messages for this payment (a split's, for any of its tenders), oldest first."""
    ids = [payment.id]
    if payment.split_id:
        ids = list(Payment.objects.filter(split_id=payment.split_id).values_list("id", flat=True))
    messages: QuerySet[OutboxMessage] = OutboxMessage.objects.filter(
        payment_id__in=ids,
        destination=Destination.COMMUNICATION_HUB,
        event_type=events.RECEIPT_EVENT,
    ).order_by("created_at")
    return [ReceiptMessage(m) for m in messages]


def receipt_can_resend(payment: Payment) -> bool:
    """Paid (not a supplier payment) and, for a split tender, the whole split settled."""
    if payment.state not in CAN_RESEND or payment.is_procurement:
        return False
    if payment.split_id:
        return payment.split.status == SplitPayment.Status.SETTLED
    return True


@transaction.atomic
def receipt_resend(*, payment_id, actor: Actor) -> OutboxMessage:
    """Ask Communication Hub to send a paid payment's receipt again (audited)."""
    payment = lock_payment(payment_id)
    authorise(actor, Perm.INITIATE_PAYMENT, payment, refusal="Only staff can send a receipt again.")
    if not receipt_can_resend(payment):
        raise PaymentError(
            "Only a paid payment (for a split, once every tender is paid) has a receipt to send.",
            code="no_receipt",
        )
    tenders = None
    if payment.split_id:
        tenders = list(
            Payment.objects.filter(split_id=payment.split_id, state__in=PAID_STATES).order_by(
                "created_at", "id"
            )
        )
    message = events.on_receipt_resend(payment, split_tenders=tenders)
    payment_audit_record(
        payment,
        actor,
        EventType.RECEIPT_RESENT,
        payload={"outbox_message_id": str(message.id), "channels": events.RECEIPT_CHANNELS},
    )
    return message
