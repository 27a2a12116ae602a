"""ACP Finance Centre billing events: recorded in the audit trail; only card usage charges move money."""

from __future__ import annotations

import json
import time

import pytest

from audit.models import AuditEvent, EventType
from integrations.inbound.models import InboundEvent, Module
from integrations.models import OutboxMessage
from integrations.signing import sign
from payments import services
from payments.models import Payment, PaymentMethod, ProviderOperation, TargetType
from tests.contracts.conftest import INBOUND_SECRETS, post_event
from tests.payments.helpers import new_payment

pytestmark = pytest.mark.django_db

ACP = Module.ACP_FINANCE_CENTRE


def _recorded():
    return AuditEvent.objects.get(event_type=EventType.BILLING_EVENT_RECORDED)


def test_a_mandate_update_is_recorded_with_its_mandate_reference_and_nothing_else(client, practice):
    response = post_event(
        client,
        ACP,
        "mandate_updated",
        {
            "practice_id": str(practice.id),
            "mandate_reference": "MD-PRIMORO-0042",
            "status": "cancelled",
            "occurred_at": "2026-11-20T10:00:00Z",
        },
    )

    assert response.status_code == 200
    assert response.json()["collection_initiated"] is False
    audit = _recorded()
    assert (audit.actor_id, audit.mandate_reference, audit.subject_id) == (
        "acp_finance_centre",
        "MD-PRIMORO-0042",
        "mandate_updated",
    )
    assert audit.payload["status"] == "cancelled"
    assert not Payment.objects.exists()
    assert not OutboxMessage.objects.exists()
    assert InboundEvent.objects.get().practice_id == practice.id


def test_a_retry_of_one_of_our_payments_is_in_its_audit_trail_and_changes_nothing(
    client, practice, site, patient, terminal, reception_actor, provider_actor
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    services.payment_fail(
        payment_id=payment.id, actor=provider_actor, code="declined", reason="Do not honour"
    )
    operations = ProviderOperation.objects.count()
    outbox = OutboxMessage.objects.count()

    response = post_event(
        client,
        ACP,
        "payment_retry",
        {
            "practice_id": str(practice.id),
            "provider": "dna",
            "attempt": 2,
            "payment_id": str(payment.id),
        },
    )

    assert response.status_code == 200
    audit = _recorded()
    assert (audit.payment_id, audit.payload["attempt"]) == (payment.id, 2)
    payment.refresh_from_db()
    assert payment.state == "failed"
    assert not payment.retries.exists()  # recorded, not acted on
    assert ProviderOperation.objects.count() == operations
    assert OutboxMessage.objects.count() == outbox


def test_a_direct_debit_retry_is_recorded_only(client, practice):
    response = post_event(
        client,
        ACP,
        "payment_retry",
        {
            "practice_id": str(practice.id),
            "provider": "gocardless",
            "attempt": 3,
            "provider_reference": "PM00ABC",
            "mandate_reference": "MD-1",
        },
    )

    assert response.status_code == 200
    audit = _recorded()
    assert (audit.provider_reference, audit.mandate_reference) == ("PM00ABC", "MD-1")
    assert not Payment.objects.exists()
    assert not ProviderOperation.objects.exists()


def test_a_retry_must_name_its_payment(client, practice):
    response = post_event(
        client,
        ACP,
        "payment_retry",
        {"practice_id": str(practice.id), "provider": "dna", "attempt": 2},
    )

    assert (response.status_code, response.json()["field"]) == (400, "provider_reference")
    assert not AuditEvent.objects.exists()


def test_a_retry_naming_another_practices_payment_is_refused(
    client, practice, other_practice, site, patient, terminal, reception_actor
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)

    response = post_event(
        client,
        ACP,
        "payment_retry",
        {
            "practice_id": str(other_practice.id),
            "provider": "dna",
            "attempt": 2,
            "payment_id": str(payment.id),
        },
    )

    assert (response.status_code, response.json()["code"]) == (400, "unknown_payment")


def test_a_dunning_step_is_recorded(client, practice):
    response = post_event(
        client,
        ACP,
        "dunning_step",
        {
            "practice_id": str(practice.id),
            "step": 2,
            "action": "second_reminder",
            "amount": "49.00",
            "mandate_reference": "MD-7",
        },
    )

    assert response.status_code == 200
    audit = _recorded()
    assert (audit.payload["step"], audit.payload["action"], str(audit.amount)) == (
        2,
        "second_reminder",
        "49.00",
    )
    assert not Payment.objects.exists()


def usage(practice, site, patient, **extra):
    return {
        "practice_id": str(practice.id),
        "site_id": str(site.id),
        "patient_id": str(patient.id),
        "usage_reference": "USG-2026-11",
        "amount": "19.99",
        "payment_profile_id": "dna-profile-usage",
        **extra,
    }


def test_a_card_usage_charge_is_a_card_on_file_payment(client, practice, site, patient):
    response = post_event(client, ACP, "usage_charge", usage(practice, site, patient))

    assert response.status_code == 200
    payment = Payment.objects.get()
    assert (payment.method, payment.payment_profile_id, payment.state) == (
        PaymentMethod.CARD_ON_FILE,
        "dna-profile-usage",
        "initiated",
    )
    assert (payment.target_type, payment.target_id) == (TargetType.PAYMENT_REQUEST, "USG-2026-11")
    assert response.json()["payment_id"] == str(payment.id)
    assert _recorded().payment_id == payment.id


def test_a_usage_charge_by_direct_debit_is_refused_we_never_initiate_a_collection(
    client, practice, site, patient
):
    response = post_event(
        client, ACP, "usage_charge", usage(practice, site, patient, provider="gocardless")
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (
        "direct_debit_not_initiated",
        "provider",
    )
    assert not Payment.objects.exists()
    assert not AuditEvent.objects.exists()
    assert not InboundEvent.objects.exists()


def test_a_captured_usage_charge_replayed_under_a_new_event_id_is_refused(
    client, practice, site, patient
):
    raw = json.dumps(usage(practice, site, patient)).encode()
    captured = sign(INBOUND_SECRETS[ACP], int(time.time()), raw, event_id="acp-1")
    first = post_event(
        client, ACP, "usage_charge", None, raw=raw, signature=captured, event_id="acp-1"
    )

    replay = post_event(
        client, ACP, "usage_charge", None, raw=raw, signature=captured, event_id="acp-2"
    )

    assert first.status_code == 200
    assert (replay.status_code, replay.json()["code"]) == (401, "invalid_signature")
    assert Payment.objects.count() == 1
    assert ProviderOperation.objects.filter(operation="card_on_file_charge").count() == 1


def test_a_second_charge_for_the_same_usage_reference_does_not_charge_twice(
    client, practice, site, patient, provider_actor
):
    first = post_event(client, ACP, "usage_charge", usage(practice, site, patient))

    again = post_event(client, ACP, "usage_charge", usage(practice, site, patient, amount="5.00"))

    assert first.status_code == 200
    assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
    assert "USG-2026-11" in again.json()["message"]
    assert Payment.objects.count() == 1
    assert ProviderOperation.objects.filter(operation="card_on_file_charge").count() == 1
    # Once the first charge has failed, the usage may be charged again.
    services.payment_fail(
        payment_id=first.json()["payment_id"], actor=provider_actor, code="declined", reason="No"
    )
    retried = post_event(client, ACP, "usage_charge", usage(practice, site, patient))
    assert retried.status_code == 200
    assert Payment.objects.count() == 2
