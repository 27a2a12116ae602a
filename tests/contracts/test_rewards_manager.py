"""Rewards Manager's synchronous credit call before capture (§4.5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.models import AuditEvent, EventType
from integrations.inbound.models import InboundEvent, Module
from payments import services
from payments.models import Payment
from tests.contracts.conftest import post_event
from tests.payments.helpers import new_payment

pytestmark = pytest.mark.django_db

RM = Module.REWARDS_MANAGER


@pytest.fixture
def payment(reception_actor, practice, site, patient, terminal):
    return new_payment(reception_actor, practice, site, patient, terminal=terminal, amount="120.00")


def apply_credit(client, payment, amount="20.00", reference="RDM-1", **extra):
    return post_event(
        client,
        RM,
        "credit_apply",
        {
            "payment_id": str(payment.id),
            "credit_amount": amount,
            "redemption_reference": reference,
            "practice_id": str(payment.practice_id),
            **extra,
        },
    )


def test_the_credit_is_applied_and_the_new_charge_amount_answered(client, payment, practice):
    response = apply_credit(client, payment, practice_id=str(practice.id))

    assert response.status_code == 200
    assert response.json() == {
        "payment_id": str(payment.id),
        "amount": "120.00",
        "rewards_credit": {"amount": "20.00", "redemption_reference": "RDM-1"},
        "charge_amount": "100.00",
        "currency": "GBP",
        "state": "initiated",
    }
    payment.refresh_from_db()
    assert (payment.rewards_credit_applied, payment.charge_amount) == (
        Decimal("20.00"),
        Decimal("100.00"),
    )
    audit = AuditEvent.objects.get(event_type=EventType.REWARDS_CREDIT_APPLIED)
    assert (audit.actor_id, audit.payload["redemption_reference"]) == ("rewards_manager", "RDM-1")
    assert InboundEvent.objects.get().practice_id == practice.id


def test_a_credit_not_below_the_amount_is_400_naming_the_field(client, payment):
    response = apply_credit(client, payment, amount="120.00")

    assert response.status_code == 400
    assert response.json()["field"] == "rewards_credit"
    assert Payment.objects.get().rewards_credit_applied is None
    assert not InboundEvent.objects.exists()


def test_a_captured_payment_takes_no_credit(client, payment, provider_actor):
    services.payment_capture(payment_id=payment.id, actor=provider_actor)

    response = apply_credit(client, payment)

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert Payment.objects.get().rewards_credit_applied is None


def test_a_second_credit_is_refused(client, payment):
    apply_credit(client, payment)

    second = apply_credit(client, payment, reference="RDM-2")

    assert second.status_code == 400
    assert second.json()["code"] == "rewards_credit_already_applied"
    assert Payment.objects.get().rewards_credit_reference == "RDM-1"


def test_an_unknown_payment_or_another_practices_payment_is_404(client, payment, other_practice):
    from uuid import uuid4

    unknown = apply_credit(client, payment, payment_id=str(uuid4()))
    # Rewards Manager speaking for another practice cannot reach this one's payment.
    elsewhere = apply_credit(client, payment, practice_id=str(other_practice.id))

    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (404, "not_found")
    assert Payment.objects.get().rewards_credit_applied is None
    assert not AuditEvent.objects.filter(event_type=EventType.REWARDS_CREDIT_APPLIED).exists()


def test_the_practice_is_required(client, payment):
    body = {"payment_id": str(payment.id), "credit_amount": "20.00", "redemption_reference": "R"}

    response = post_event(client, RM, "credit_apply", body)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("missing_field", "practice_id")
    assert Payment.objects.get().rewards_credit_applied is None
