"""Appointment Manager: deposit collection triggers and attendance reports, over HTTP."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.inbound.models import InboundEvent, Module
from integrations.models import Destination, OutboxMessage
from payments import services
from payments.models import (
    Deposit,
    DepositStatus,
    Payment,
    PaymentLink,
    PaymentMethod,
    PaymentState,
    TargetType,
)
from tests.contracts.conftest import post_event
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

AM = Module.APPOINTMENT_MANAGER


def request_deposit(client, practice, site, patient, *, appointment_id="APT-1", **extra):
    body = {
        "practice_id": str(practice.id),
        "site_id": str(site.id),
        "patient_id": str(patient.id),
        "appointment_id": appointment_id,
        "amount": "75.00",
        **extra,
    }
    return post_event(client, AM, "deposit_requested", body)


def report(client, practice, appointment_id, outcome):
    return post_event(
        client,
        AM,
        "attendance_reported",
        {"practice_id": str(practice.id), "appointment_id": appointment_id, "outcome": outcome},
    )


def pay(deposit, provider_actor):
    """The patient pays the link: DNA reports the capture."""
    return services.payment_capture(payment_id=deposit.payment_id, actor=provider_actor).payment


def test_a_deposit_request_records_the_deposit_and_sends_a_pay_by_link(
    client, practice, site, patient
):
    due = timezone.now() + timedelta(days=2)
    response = request_deposit(
        client, practice, site, patient, due_at=due.isoformat(), channel="email"
    )

    assert response.status_code == 200
    deposit = Deposit.objects.get()
    payment = deposit.payment
    assert (deposit.status, deposit.amount, deposit.appointment_id) == (
        DepositStatus.REQUESTED,
        Decimal("75.00"),
        "APT-1",
    )
    assert (payment.method, payment.target_type, payment.target_id) == (
        PaymentMethod.PAY_BY_LINK,
        TargetType.DEPOSIT,
        str(deposit.id),
    )
    assert payment.state == PaymentState.AWAITING_CUSTOMER_ACTION
    assert payment.initiated_by_label == "appointment_manager"
    assert payment.due_at == due
    link = PaymentLink.objects.get(payment=payment)
    assert link.channel == "email"
    # The link stays payable until the last reminder (due + 14 days by default).
    assert link.expires_at >= due + timedelta(days=14)
    delivery = OutboxMessage.objects.get(event_type="payment_link.deliver")
    assert delivery.destination == Destination.COMMUNICATION_HUB
    assert delivery.payload["channels"][0] == "email"
    assert response.json() == {
        "deposit_id": str(deposit.id),
        "appointment_id": "APT-1",
        "status": "requested",
        "amount": "75.00",
        "currency": "GBP",
        "due_at": due.isoformat(),
        "payment_id": str(payment.id),
        "payment_state": "awaiting_customer_action",
    }
    # The answer never carries the one-time link (only its hash is kept).
    assert "url" not in str(InboundEvent.objects.get().response)
    audit = AuditEvent.objects.get(event_type=EventType.DEPOSIT_STATUS_CHANGED)
    assert (audit.from_state, audit.to_state, audit.actor_id) == (
        "",
        "requested",
        "appointment_manager",
    )


def test_the_patient_may_be_named_by_their_pms_id(client, practice, site):
    patient = PatientFactory(practice=practice, pms_patient_id="PMS-777")

    response = request_deposit(client, practice, site, patient, patient_id="PMS-777")

    assert response.status_code == 200
    assert Deposit.objects.get().patient == patient


def test_a_patient_of_another_practice_is_refused(client, practice, site, other_practice):
    stranger = other_practice.patients.get()

    response = request_deposit(client, practice, site, stranger)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("unknown_patient", "patient_id")
    assert not Deposit.objects.exists()


def test_a_site_of_another_practice_is_refused(client, practice, patient, other_practice):
    response = request_deposit(client, practice, other_practice.sites.get(), patient)

    assert response.status_code == 400
    assert response.json()["field"] == "site_id"


def test_a_due_date_without_its_offset_is_refused(client, practice, site, patient):
    response = request_deposit(client, practice, site, patient, due_at="2026-12-01T09:00:00")

    assert response.status_code == 400
    assert response.json()["field"] == "due_at"
    assert not Deposit.objects.exists()


def test_a_second_deposit_for_the_same_appointment_is_refused(client, practice, site, patient):
    request_deposit(client, practice, site, patient)

    again = request_deposit(client, practice, site, patient)

    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    assert Deposit.objects.count() == 1
    assert Payment.objects.count() == 1


def test_capture_marks_the_deposit_paid(client, practice, site, patient, provider_actor):
    request_deposit(client, practice, site, patient)
    deposit = Deposit.objects.get()

    pay(deposit, provider_actor)

    deposit.refresh_from_db()
    assert deposit.status == DepositStatus.PAID
    assert deposit.paid_at is not None
    change = AuditEvent.objects.filter(event_type=EventType.DEPOSIT_STATUS_CHANGED).last()
    assert (change.from_state, change.to_state) == ("requested", "paid")


@pytest.mark.parametrize(
    ("outcome", "status", "signal"),
    [
        ("attended", DepositStatus.CONVERTED, "deposit.converted"),
        ("no_show", DepositStatus.FORFEITED, "deposit.forfeited"),
    ],
)
def test_attendance_settles_a_paid_deposit_with_a_financial_signal(
    client, practice, site, patient, provider_actor, outcome, status, signal
):
    request_deposit(client, practice, site, patient)
    deposit = Deposit.objects.get()
    payment = pay(deposit, provider_actor)

    response = report(client, practice, "APT-1", outcome)

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["changed"]) == (status, True)
    deposit.refresh_from_db()
    assert (deposit.status, deposit.attendance_outcome) == (status, outcome)
    (message,) = OutboxMessage.objects.filter(event_type__startswith="deposit.")
    assert (message.destination, message.event_type) == (Destination.FINANCIAL_INSIGHTS, signal)
    assert message.payload["deposit_id"] == str(deposit.id)
    assert message.payload["patient_id"] == str(patient.id)
    assert message.payload["practice_id"] == str(practice.id)
    assert message.payload["billable_target"] == {
        "type": "deposit",
        "id": str(deposit.id),
        "pms_invoice_ref": None,
    }
    assert (message.payload["amount"], message.payload["payment_id"]) == ("75.00", str(payment.id))
    assert message.payload["override"] is False


def test_a_repeated_attendance_report_changes_nothing(
    client, practice, site, patient, provider_actor
):
    request_deposit(client, practice, site, patient)
    pay(Deposit.objects.get(), provider_actor)
    report(client, practice, "APT-1", "attended")

    again = report(client, practice, "APT-1", "attended")

    assert again.status_code == 200
    assert again.json()["changed"] is False
    assert OutboxMessage.objects.filter(event_type="deposit.converted").count() == 1


def test_a_contradicting_report_is_refused(client, practice, site, patient, provider_actor):
    request_deposit(client, practice, site, patient)
    pay(Deposit.objects.get(), provider_actor)
    report(client, practice, "APT-1", "attended")

    contrary = report(client, practice, "APT-1", "no_show")

    assert contrary.status_code == 409
    assert Deposit.objects.get().status == DepositStatus.CONVERTED
    assert not OutboxMessage.objects.filter(event_type="deposit.forfeited").exists()


def test_an_unpaid_deposit_is_neither_converted_nor_forfeited(client, practice, site, patient):
    request_deposit(client, practice, site, patient)

    response = report(client, practice, "APT-1", "no_show")

    assert response.status_code == 409
    assert Deposit.objects.get().status == DepositStatus.REQUESTED
    assert not OutboxMessage.objects.filter(event_type__startswith="deposit.").exists()
    assert InboundEvent.objects.filter(event_type="attendance_reported").count() == 0


def test_an_attendance_report_for_an_unknown_appointment_is_404(client, practice):
    response = report(client, practice, "APT-NONE", "attended")

    assert response.status_code == 404


def test_an_unknown_outcome_is_400_naming_the_field(client, practice):
    response = report(client, practice, "APT-1", "late")

    assert (response.status_code, response.json()["field"]) == (400, "outcome")
