"""ACP Finance Centre: billing orchestration events (§4.6, §13.2.14, §13.2.16).

ACP Finance Centre orchestrates mandates, retries, dunning and usage charges
through GoCardless and DNA Payments. We reflect each in the audit trail (and,
where it names one of our payments, in that payment's trail). Only a usage
charge on a card moves money here: a card-on-file payment on the given
profile. Mandate changes, retries and dunning steps are recorded, never acted
on: Integrated Payments never initiates or retries a Direct Debit collection
(§3.4), so a usage charge asking for Direct Debit is refused.
"""

from __future__ import annotations

from django.db import transaction
from rest_framework import serializers

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from integrations.inbound.inputs import (
    Answer,
    AwareDateTimeField,
    InvalidBody,
    MoneyField,
    place_of,
    practice_of,
    reference,
    validated,
)
from payments import services
from payments.errors import InvalidTransition
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from practices.models import Practice

ACTOR = Actor.system("acp_finance_centre")
PROVIDERS = ("gocardless", "dna")


def _our_payment(practice: Practice, payment_id) -> Payment | None:
    if payment_id is None:
        return None
    payment = Payment.objects.filter(pk=payment_id, practice=practice).first()
    if payment is None:
        raise InvalidBody(
            "No such payment at this practice.", code="unknown_payment", field="payment_id"
        )
    return payment


@transaction.atomic
def billing_event_record(
    *,
    practice: Practice,
    event_type: str,
    details: dict,
    mandate_reference: str = "",
    provider_reference: str = "",
    payment: Payment | None = None,
    amount=None,
) -> dict:
    """Record one ACP billing event in the audit trail. Changes no payment and moves no money."""
    event = audit_record(
        event_type=EventType.BILLING_EVENT_RECORDED,
        practice_id=practice.id,
        actor=ACTOR,
        site_id=payment.site_id if payment else None,
        payment_id=payment.id if payment else None,
        subject_type="billing_event",
        subject_id=event_type,
        amount=amount,
        currency=practice.currency if amount is not None else "",
        method=payment.method if payment else "",
        provider_reference=provider_reference[:128],
        mandate_reference=mandate_reference[:64],
        payload={"billing_event": event_type, **details},
    )
    return {
        "recorded": True,
        "billing_event": event_type,
        "audit_event_id": str(event.event_id),
        "payment_id": str(payment.id) if payment else None,
        "collection_initiated": False,
    }


# --- Recorded only -------------------------------------------------------------------


class MandateUpdated(serializers.Serializer):
    practice_id = serializers.UUIDField()
    mandate_reference = reference()
    status = serializers.CharField(max_length=32)
    occurred_at = AwareDateTimeField(required=False)


def mandate_updated(body: dict) -> Answer:
    data = validated(MandateUpdated, body)
    practice = practice_of(data["practice_id"])
    answer = billing_event_record(
        practice=practice,
        event_type="mandate_updated",
        mandate_reference=data["mandate_reference"],
        details={
            "status": data["status"],
            "occurred_at": data["occurred_at"].isoformat() if "occurred_at" in data else None,
        },
    )
    return Answer(answer, practice_id=practice.id)


class PaymentRetry(serializers.Serializer):
    practice_id = serializers.UUIDField()
    provider = serializers.ChoiceField(choices=PROVIDERS)
    attempt = serializers.IntegerField(min_value=1, max_value=100)
    payment_id = serializers.UUIDField(required=False)
    provider_reference = serializers.CharField(
        max_length=128, required=False, default="", allow_blank=True
    )
    mandate_reference = serializers.CharField(
        max_length=64, required=False, default="", allow_blank=True
    )
    scheduled_at = AwareDateTimeField(required=False)

    def validate(self, attrs):
        if "payment_id" not in attrs and not attrs["provider_reference"]:
            raise serializers.ValidationError(
                {"provider_reference": "Name the payment: payment_id or provider_reference."}
            )
        return attrs


def payment_retry(body: dict) -> Answer:
    data = validated(PaymentRetry, body)
    practice = practice_of(data["practice_id"])
    payment = _our_payment(practice, data.get("payment_id"))
    answer = billing_event_record(
        practice=practice,
        event_type="payment_retry",
        payment=payment,
        mandate_reference=data["mandate_reference"],
        provider_reference=data["provider_reference"],
        details={
            "provider": data["provider"],
            "attempt": data["attempt"],
            "scheduled_at": data["scheduled_at"].isoformat() if "scheduled_at" in data else None,
        },
    )
    return Answer(answer, practice_id=practice.id)


class DunningStep(serializers.Serializer):
    practice_id = serializers.UUIDField()
    step = serializers.IntegerField(min_value=1, max_value=100)
    action = serializers.CharField(max_length=64)
    payment_id = serializers.UUIDField(required=False)
    mandate_reference = serializers.CharField(
        max_length=64, required=False, default="", allow_blank=True
    )
    amount = MoneyField(required=False)


def dunning_step(body: dict) -> Answer:
    data = validated(DunningStep, body)
    practice = practice_of(data["practice_id"])
    payment = _our_payment(practice, data.get("payment_id"))
    answer = billing_event_record(
        practice=practice,
        event_type="dunning_step",
        payment=payment,
        mandate_reference=data["mandate_reference"],
        amount=data.get("amount"),
        details={"step": data["step"], "action": data["action"]},
    )
    return Answer(answer, practice_id=practice.id)


# --- Usage charges: the one ACP event that moves money, and only on a card ------------


class UsageCharge(serializers.Serializer):
    practice_id = serializers.UUIDField()
    site_id = serializers.UUIDField()
    patient_id = reference(help_text="Our patient id, or the PMS patient id.")
    usage_reference = reference()
    amount = MoneyField()
    payment_profile_id = reference()
    provider = serializers.ChoiceField(choices=PROVIDERS, default="dna")
    description = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True
    )


@transaction.atomic
def usage_charge_create(*, place, usage_reference: str, amount, payment_profile_id, description):
    """A usage charge on the card on file: a payment request paid from the profile.

    One live payment per usage reference: a second charge for the same usage
    (however it is sent) is refused unless the first failed or was voided.
    """
    # One practice's usage charges are started one at a time, so the check
    # below cannot race another charge for the same reference.
    Practice.objects.select_for_update().get(pk=place.practice.pk)
    live = (
        Payment.objects.filter(
            practice=place.practice,
            target_type=TargetType.PAYMENT_REQUEST,
            target_id=usage_reference,
        )
        .exclude(state__in=[PaymentState.FAILED, PaymentState.VOIDED])
        .first()
    )
    if live is not None:
        raise InvalidTransition(
            f"Usage {usage_reference} already has a payment "
            f"({live.get_state_display().lower()}): it is not charged twice.",
        )
    payment = services.payment_create(
        actor=ACTOR,
        practice=place.practice,
        site=place.site,
        patient=place.patient,
        target_type=TargetType.PAYMENT_REQUEST,
        target_id=usage_reference,
        amount=amount,
        method=PaymentMethod.CARD_ON_FILE,
        payment_profile_id=payment_profile_id,
    )
    answer = billing_event_record(
        practice=place.practice,
        event_type="usage_charge",
        payment=payment,
        amount=payment.amount,
        details={"usage_reference": usage_reference, "description": description},
    )
    return payment, answer


def usage_charge(body: dict) -> Answer:
    data = validated(UsageCharge, body)
    if data["provider"] == "gocardless":
        raise InvalidBody(
            "Integrated Payments never initiates a Direct Debit collection; "
            "usage charges by Direct Debit stay with GoCardless and the ACP Finance Centre.",
            code="direct_debit_not_initiated",
            field="provider",
        )
    place = place_of(data)
    payment, answer = usage_charge_create(
        place=place,
        usage_reference=data["usage_reference"],
        amount=data["amount"],
        payment_profile_id=data["payment_profile_id"],
        description=data["description"],
    )
    return Answer(
        {**answer, "payment_state": payment.state, "amount": str(payment.amount)},
        practice_id=place.practice.id,
    )
