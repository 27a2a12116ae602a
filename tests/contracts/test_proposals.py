"""Smart Treatment Proposals: acceptance with the PaymentProfileID and the chosen option (§4.6)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.inbound.models import InboundEvent, Module, ProposalAcceptance
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from payments.overdue import instalments_start_due
from tests.contracts.conftest import post_event

pytestmark = pytest.mark.django_db

STP = Module.SMART_TREATMENT_PROPOSALS


def accept(client, practice, site, patient, option, **extra):
    body = {
        "practice_id": str(practice.id),
        "site_id": str(site.id),
        "patient_id": str(patient.id),
        "proposal_id": "PROP-42",
        "payment_profile_id": "dna-profile-7Hq2",
        "option": option,
        "amount": "900.00",
        **extra,
    }
    return post_event(client, STP, "proposal_accepted", body)


def test_a_deposit_is_a_card_on_file_payment_on_the_proposals_profile(
    client, practice, site, patient
):
    response = accept(client, practice, site, patient, "deposit", amount="150.00")

    assert response.status_code == 200
    payment = Payment.objects.get()
    assert (payment.method, payment.payment_profile_id) == (
        PaymentMethod.CARD_ON_FILE,
        "dna-profile-7Hq2",
    )
    assert (payment.target_type, payment.target_id, payment.amount) == (
        TargetType.DEPOSIT,
        "PROP-42",
        Decimal("150.00"),
    )
    assert payment.state == PaymentState.INITIATED
    assert payment.initiated_by_label == "smart_treatment_proposals"
    assert response.json()["payments"] == [{"payment_id": str(payment.id), "state": "initiated"}]
    acceptance = ProposalAcceptance.objects.get()
    assert (acceptance.option, acceptance.payment) == ("deposit", payment)
    audit = AuditEvent.objects.get(event_type=EventType.PROPOSAL_ACCEPTED)
    assert (audit.payment_id, audit.payload["option"]) == (payment.id, "deposit")


def test_staged_payments_are_a_schedule_of_card_on_file_requests(client, practice, site, patient):
    now = timezone.now()
    instalments = [
        {"due_at": (now - timedelta(minutes=1)).isoformat(), "amount": "300.00"},
        {"due_at": (now + timedelta(days=30)).isoformat(), "amount": "300.00"},
        {"due_at": (now + timedelta(days=60)).isoformat(), "amount": "300.00"},
    ]

    response = accept(client, practice, site, patient, "staged", instalments=instalments)

    assert response.status_code == 200
    acceptance = ProposalAcceptance.objects.get()
    assert [item["number"] for item in acceptance.schedule] == [1, 2, 3]
    payments = [Payment.objects.get(pk=item["payment_id"]) for item in acceptance.schedule]
    assert [p.target_id for p in payments] == ["PROP-42#1", "PROP-42#2", "PROP-42#3"]
    assert {p.method for p in payments} == {PaymentMethod.CARD_ON_FILE}
    assert {p.payment_profile_id for p in payments} == {"dna-profile-7Hq2"}
    assert [p.state for p in payments] == ["initiated", "proposed", "proposed"]
    assert [p.due_at.isoformat() for p in payments] == [i["due_at"] for i in instalments]
    assert [p["state"] for p in response.json()["payments"]] == [
        "initiated",
        "proposed",
        "proposed",
    ]

    started = instalments_start_due(now=now + timedelta(days=31))

    assert started == 1
    assert [Payment.objects.get(pk=p.pk).state for p in payments] == [
        "initiated",
        "initiated",
        "proposed",
    ]


def test_instalments_must_add_up_to_the_amount(client, practice, site, patient):
    now = timezone.now()
    response = accept(
        client,
        practice,
        site,
        patient,
        "staged",
        instalments=[
            {"due_at": now.isoformat(), "amount": "300.00"},
            {"due_at": (now + timedelta(days=30)).isoformat(), "amount": "500.00"},
        ],
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (
        "instalments_mismatch",
        "instalments",
    )
    assert not Payment.objects.exists()
    assert not ProposalAcceptance.objects.exists()


def test_an_instalment_with_a_bad_amount_names_the_nested_field(client, practice, site, patient):
    response = accept(
        client,
        practice,
        site,
        patient,
        "staged",
        instalments=[{"due_at": timezone.now().isoformat(), "amount": "-5"}],
    )

    assert response.status_code == 400
    assert response.json()["field"] == "instalments.0.amount"


def test_a_finance_referral_records_the_outcome_and_makes_no_payment(
    client, practice, site, patient
):
    response = accept(
        client,
        practice,
        site,
        patient,
        "finance_referral",
        payment_profile_id="",
        finance={"provider": "Tabeo", "outcome": "approved", "reference": "TAB-991"},
    )

    assert response.status_code == 200
    assert not Payment.objects.exists()
    acceptance = ProposalAcceptance.objects.get()
    assert acceptance.finance_referral == {
        "provider": "Tabeo",
        "outcome": "approved",
        "reference": "TAB-991",
    }
    audit = AuditEvent.objects.get(event_type=EventType.PROPOSAL_ACCEPTED)
    assert audit.payment_id is None
    assert audit.payload["finance_referral"]["outcome"] == "approved"
    assert response.json()["payments"] == []


def test_a_finance_referral_without_its_outcome_is_refused(client, practice, site, patient):
    response = accept(client, practice, site, patient, "finance_referral")

    assert (response.status_code, response.json()["field"]) == (400, "finance")
    assert not ProposalAcceptance.objects.exists()


@pytest.mark.parametrize("option", ["deposit", "staged"])
def test_paying_options_need_the_payment_profile(client, practice, site, patient, option):
    response = accept(
        client,
        practice,
        site,
        patient,
        option,
        payment_profile_id="",
        instalments=[{"due_at": timezone.now().isoformat(), "amount": "900.00"}],
    )

    assert (response.status_code, response.json()["field"]) == (400, "payment_profile_id")
    assert not Payment.objects.exists()


def test_a_proposal_is_accepted_once(client, practice, site, patient):
    accept(client, practice, site, patient, "deposit", amount="150.00")

    again = accept(client, practice, site, patient, "deposit", amount="150.00")

    assert again.status_code == 409
    assert Payment.objects.count() == 1
    assert InboundEvent.objects.count() == 1
