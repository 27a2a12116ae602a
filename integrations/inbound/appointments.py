"""Appointment Manager: deposit collection triggers and attendance reports (§4.6, product page §6).

Appointment Manager owns the deposit policy; we collect, show the status and
settle the deposit when it tells us how the appointment went.
"""

from __future__ import annotations

from rest_framework import serializers

from audit.actors import Actor
from integrations.inbound.inputs import (
    Answer,
    AwareDateTimeField,
    MoneyField,
    place_of,
    practice_of,
    reference,
    validated,
)
from payments import deposits
from payments.models import Deposit

ACTOR = Actor.system("appointment_manager")


def _deposit_answer(deposit: Deposit, **extra) -> Answer:
    payment = deposit.payment
    return Answer(
        {
            "deposit_id": str(deposit.id),
            "appointment_id": deposit.appointment_id,
            "status": deposit.status,
            "amount": str(deposit.amount),
            "currency": deposit.currency,
            "due_at": deposit.due_at.isoformat() if deposit.due_at else None,
            "payment_id": str(payment.id) if payment else None,
            "payment_state": payment.state if payment else None,
            **extra,
        },
        practice_id=deposit.practice_id,
    )


class DepositRequested(serializers.Serializer):
    practice_id = serializers.UUIDField()
    site_id = serializers.UUIDField()
    patient_id = reference(help_text="Our patient id, or the PMS patient id.")
    appointment_id = reference()
    amount = MoneyField()
    due_at = AwareDateTimeField(required=False)
    channel = serializers.ChoiceField(choices=["app", "email", "sms"], default="app")


def deposit_requested(body: dict) -> Answer:
    data = validated(DepositRequested, body)
    place = place_of(data)
    deposit = deposits.deposit_request(
        actor=ACTOR,
        practice=place.practice,
        site=place.site,
        patient=place.patient,
        appointment_id=data["appointment_id"],
        amount=data["amount"],
        due_at=data.get("due_at"),
        channel=data["channel"],
    )
    return _deposit_answer(deposit)


class AttendanceReported(serializers.Serializer):
    practice_id = serializers.UUIDField()
    appointment_id = reference()
    outcome = serializers.ChoiceField(choices=sorted(deposits.ATTENDANCE_OUTCOMES))


def attendance_reported(body: dict) -> Answer:
    data = validated(AttendanceReported, body)
    outcome = deposits.deposit_record_attendance(
        actor=ACTOR,
        practice=practice_of(data["practice_id"]),
        appointment_id=data["appointment_id"],
        outcome=data["outcome"],
    )
    return _deposit_answer(outcome.deposit, changed=outcome.changed)
