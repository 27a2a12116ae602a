"""Rewards Manager: the synchronous credit call before capture (§4.5, §6.1).

Rewards Manager decides eligibility and the amount; we apply the credit to a
payment not yet sent for capture and answer with what will now be charged.
"""

from __future__ import annotations

from rest_framework import serializers

from audit.actors import Actor
from integrations.inbound.inputs import Answer, MoneyField, reference, validated
from payments import services
from payments.errors import NotFound
from payments.models import Payment

ACTOR = Actor.system("rewards_manager")


class CreditApply(serializers.Serializer):
    payment_id = serializers.UUIDField()
    credit_amount = MoneyField()
    redemption_reference = reference()
    practice_id = serializers.UUIDField(
        help_text="The practice the payment belongs to; another practice's payment is not found."
    )


def credit_apply(body: dict) -> Answer:
    data = validated(CreditApply, body)
    # Scoped to the practice named: Rewards Manager reaches no other practice's payment.
    if not Payment.objects.filter(pk=data["payment_id"], practice_id=data["practice_id"]).exists():
        raise NotFound("No such payment at this practice.")
    payment = services.payment_apply_rewards_credit(
        payment_id=data["payment_id"],
        actor=ACTOR,
        amount=data["credit_amount"],
        reference=data["redemption_reference"],
    )
    return Answer(
        {
            "payment_id": str(payment.id),
            "amount": str(payment.amount),
            "rewards_credit": {
                "amount": str(payment.rewards_credit_applied),
                "redemption_reference": payment.rewards_credit_reference,
            },
            "charge_amount": str(payment.charge_amount),
            "currency": payment.currency,
            "state": payment.state,
        },
        practice_id=payment.practice_id,
    )
