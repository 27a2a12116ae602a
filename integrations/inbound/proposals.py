"""Smart Treatment Proposals: an accepted proposal and the option the patient chose (§4.6, §13.2.15).

The proposal carries the patient's PaymentProfileID, which pre-populates the
payment method (card on file) for the option chosen:

- deposit: one card-on-file payment for the deposit, started now;
- staged: one card-on-file payment per instalment, each with its due date;
  those due now are started now, later ones wait in `proposed` until
  `payments.overdue.instalments_start_due` starts them on their day;
- finance_referral: the third-party provider's outcome is recorded; no payment.
"""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
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
    reference,
    validated,
)
from integrations.inbound.models import ProposalAcceptance, ProposalOption
from payments import services
from payments.errors import InvalidTransition, PaymentError
from payments.models import Payment, PaymentMethod, TargetType
from practices.models import Patient, Practice, Site

ACTOR = Actor.system("smart_treatment_proposals")
MAX_INSTALMENTS = 36
FINANCE_OUTCOMES = ("referred", "approved", "declined", "withdrawn")


def _require_profile(payment_profile_id: str) -> None:
    if not payment_profile_id:
        raise PaymentError(
            "This option is paid from the proposal's payment profile.",
            code="payment_profile_required",
            field="payment_profile_id",
        )


def _instalment_payment(
    *, practice, site, patient, proposal_id, number, amount, due_at, profile, now
) -> Payment:
    payment = services.payment_create(
        actor=ACTOR,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.PAYMENT_REQUEST,
        target_id=f"{proposal_id}#{number}",
        amount=amount,
        method=PaymentMethod.CARD_ON_FILE,
        payment_profile_id=profile,
        initiate=due_at <= now,
    )
    return services.payment_set_due(payment_id=payment.id, actor=ACTOR, due_at=due_at)


def _schedule(instalments: list[dict], amount: Decimal) -> list[dict]:
    if not instalments:
        raise InvalidBody(
            "Staged payments need their instalments.", code="missing_field", field="instalments"
        )
    if len(instalments) > MAX_INSTALMENTS:
        raise InvalidBody(
            f"At most {MAX_INSTALMENTS} instalments.", code="invalid_field", field="instalments"
        )
    dues = [item["due_at"] for item in instalments]
    if any(later <= earlier for earlier, later in itertools.pairwise(dues)):
        raise InvalidBody(
            "Instalments are listed in due-date order, each later than the one before.",
            code="invalid_field",
            field="instalments",
        )
    total = sum((item["amount"] for item in instalments), Decimal("0"))
    if total != amount:
        raise InvalidBody(
            f"The instalments add up to {total}, not {amount}.",
            code="instalments_mismatch",
            field="instalments",
        )
    return instalments


@transaction.atomic
def proposal_accept(
    *,
    practice: Practice,
    site: Site,
    patient: Patient,
    proposal_id: str,
    option: str,
    amount: Decimal,
    payment_profile_id: str = "",
    instalments: list[dict] | None = None,
    finance_referral: dict | None = None,
) -> ProposalAcceptance:
    """Set up what the accepted proposal's option needs, once per proposal."""
    if ProposalAcceptance.objects.filter(practice=practice, proposal_id=proposal_id).exists():
        raise InvalidTransition(f"Proposal {proposal_id} was already accepted.")
    acceptance = ProposalAcceptance(
        practice=practice,
        site=site,
        patient=patient,
        proposal_id=proposal_id,
        option=option,
        amount=amount,
        currency=practice.currency,
        payment_profile_id=payment_profile_id,
    )
    now = timezone.now()
    if option == ProposalOption.DEPOSIT:
        _require_profile(payment_profile_id)
        acceptance.payment = services.payment_create(
            actor=ACTOR,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.DEPOSIT,
            target_id=proposal_id,
            amount=amount,
            method=PaymentMethod.CARD_ON_FILE,
            payment_profile_id=payment_profile_id,
        )
    elif option == ProposalOption.STAGED:
        _require_profile(payment_profile_id)
        for number, item in enumerate(_schedule(instalments or [], amount), start=1):
            payment = _instalment_payment(
                practice=practice,
                site=site,
                patient=patient,
                proposal_id=proposal_id,
                number=number,
                amount=item["amount"],
                due_at=item["due_at"],
                profile=payment_profile_id,
                now=now,
            )
            acceptance.schedule.append(
                {
                    "number": number,
                    "due_at": item["due_at"].isoformat(),
                    "amount": str(item["amount"]),
                    "payment_id": str(payment.id),
                }
            )
    elif option == ProposalOption.FINANCE_REFERRAL:
        if not finance_referral:
            raise InvalidBody(
                "A finance referral carries its outcome.", code="missing_field", field="finance"
            )
        acceptance.finance_referral = dict(finance_referral)
    else:
        raise InvalidBody("Unknown option.", code="invalid_field", field="option")
    acceptance.save(force_insert=True)
    audit_record(
        event_type=EventType.PROPOSAL_ACCEPTED,
        practice_id=practice.id,
        actor=ACTOR,
        site_id=site.id,
        payment_id=acceptance.payment_id,
        subject_type="proposal",
        subject_id=str(acceptance.id),
        amount=amount,
        currency=acceptance.currency,
        method=PaymentMethod.CARD_ON_FILE if option != ProposalOption.FINANCE_REFERRAL else "",
        target_type=TargetType.DEPOSIT if option == ProposalOption.DEPOSIT else "",
        target_id=proposal_id,
        payload={
            "proposal_id": proposal_id,
            "patient_id": str(patient.id),
            "option": option,
            "schedule": acceptance.schedule,
            "finance_referral": acceptance.finance_referral or None,
        },
    )
    return acceptance


# --- The contract ------------------------------------------------------------------


class Instalment(serializers.Serializer):
    due_at = AwareDateTimeField()
    amount = MoneyField()


class FinanceReferral(serializers.Serializer):
    provider = serializers.CharField(max_length=100)
    outcome = serializers.ChoiceField(choices=FINANCE_OUTCOMES)
    reference = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)


class ProposalAccepted(serializers.Serializer):
    practice_id = serializers.UUIDField()
    site_id = serializers.UUIDField()
    patient_id = reference(help_text="Our patient id, or the PMS patient id.")
    proposal_id = reference(max_length=60)
    option = serializers.ChoiceField(choices=ProposalOption.values)
    amount = MoneyField()
    payment_profile_id = serializers.CharField(
        max_length=64, required=False, default="", allow_blank=True
    )
    instalments = Instalment(many=True, required=False)
    finance = FinanceReferral(required=False)


def proposal_accepted(body: dict) -> Answer:
    data = validated(ProposalAccepted, body)
    place = place_of(data)
    acceptance = proposal_accept(
        practice=place.practice,
        site=place.site,
        patient=place.patient,
        proposal_id=data["proposal_id"],
        option=data["option"],
        amount=data["amount"],
        payment_profile_id=data["payment_profile_id"],
        instalments=data.get("instalments"),
        finance_referral=data.get("finance"),
    )
    payment_ids = (
        [acceptance.payment_id]
        if acceptance.payment_id
        else [uuid.UUID(item["payment_id"]) for item in acceptance.schedule]
    )
    states = dict(Payment.objects.filter(pk__in=payment_ids).values_list("pk", "state"))
    payments = [{"payment_id": str(pk), "state": states[pk]} for pk in payment_ids]
    return Answer(
        {
            "acceptance_id": str(acceptance.id),
            "proposal_id": acceptance.proposal_id,
            "option": acceptance.option,
            "amount": str(acceptance.amount),
            "currency": acceptance.currency,
            "payments": payments,
            "schedule": acceptance.schedule,
            "finance_referral": acceptance.finance_referral or None,
        },
        practice_id=acceptance.practice_id,
    )
