"""Inventory & Compliance Manager: a matched supplier invoice to pay (§6.4, §13.2.18).

Inventory owns PO matching and invoice verification; we execute the payment
on the practice's payment profile and confirm it back on capture
(`supplier_payment.executed`, see payments.events).
"""

from __future__ import annotations

from rest_framework import serializers

from audit.actors import Actor
from integrations.inbound.inputs import Answer, MoneyField, place_of, reference, validated
from payments import services

ACTOR = Actor.system("inventory_manager")


class InvoiceMatched(serializers.Serializer):
    practice_id = serializers.UUIDField()
    site_id = serializers.UUIDField()
    purchase_order_id = reference()
    supplier_invoice_id = reference()
    supplier_name = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True
    )
    amount = MoneyField()
    payment_profile_id = reference(help_text="The practice's own card-on-file profile.")


def invoice_matched(body: dict) -> Answer:
    data = validated(InvoiceMatched, body)
    place = place_of(data, patient=False)
    payment = services.supplier_payment_create(
        actor=ACTOR,
        practice=place.practice,
        site=place.site,
        purchase_order_id=data["purchase_order_id"],
        supplier_invoice_id=data["supplier_invoice_id"],
        supplier_name=data["supplier_name"],
        amount=data["amount"],
        payment_profile_id=data["payment_profile_id"],
    )
    return Answer(
        {
            "payment_id": str(payment.id),
            "state": payment.state,
            "purchase_order_id": data["purchase_order_id"],
            "supplier_invoice_id": data["supplier_invoice_id"],
            "amount": str(payment.amount),
            "currency": payment.currency,
        },
        practice_id=payment.practice_id,
    )
