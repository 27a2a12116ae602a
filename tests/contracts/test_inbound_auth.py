"""The inbound endpoint's guarantees, for every module: signed, fresh, once, all or nothing."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from django.db import connection
from django.test import Client

from audit.models import AuditEvent
from integrations.inbound.contracts import CONTRACTS
from integrations.inbound.models import InboundEvent, Module
from integrations.models import OutboxMessage
from integrations.signing import sign
from payments.models import Deposit, Payment
from tests.contracts.conftest import INBOUND_SECRETS, inbound_path, post_event

pytestmark = pytest.mark.django_db

AM = Module.APPOINTMENT_MANAGER


def deposit_body(practice, site, patient, **overrides):
    return {
        "practice_id": str(practice.id),
        "site_id": str(site.id),
        "patient_id": str(patient.id),
        "appointment_id": "APT-1001",
        "amount": "50.00",
        "due_at": "2026-12-01T09:00:00Z",
        "channel": "sms",
        **overrides,
    }


def _nothing_stored():
    return (
        InboundEvent.objects.count(),
        Deposit.objects.count(),
        Payment.objects.count(),
        OutboxMessage.objects.count(),
        AuditEvent.objects.count(),
    ) == (0, 0, 0, 0, 0)


def test_every_module_has_its_own_secret_setting_and_contracts():
    from django.conf import settings

    assert set(settings.INBOUND_SECRETS) == set(Module.values)
    assert {module for module, _ in CONTRACTS} == set(Module.values)


def test_a_signed_event_takes_effect_and_is_stored_with_its_answer(client, practice, site, patient):
    response = post_event(
        client, AM, "deposit_requested", deposit_body(practice, site, patient), event_id="am-1"
    )

    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert (event.module, event.event_id, event.event_type) == (AM, "am-1", "deposit_requested")
    assert event.practice_id == practice.id
    assert event.response == response.json()
    assert Deposit.objects.get().id == uuid.UUID(response.json()["deposit_id"])


@pytest.mark.parametrize(
    "how",
    [
        "wrong_secret",
        "another_modules_secret",
        "tampered_body",
        "another_event_id",
        "missing",
        "garbage",
    ],
)
def test_a_bad_or_missing_signature_is_refused_and_nothing_happens(
    client, practice, site, patient, how
):
    body = deposit_body(practice, site, patient)
    raw = json.dumps(body).encode()
    now = int(time.time())
    signature = {
        "wrong_secret": sign("not-the-secret-at-all-123456", now, raw, event_id="e-1"),
        "another_modules_secret": sign(
            INBOUND_SECRETS[Module.REWARDS_MANAGER], now, raw, event_id="e-1"
        ),
        "tampered_body": sign(
            INBOUND_SECRETS[AM], now, raw.replace(b"50.00", b"5.00"), event_id="e-1"
        ),
        "another_event_id": sign(INBOUND_SECRETS[AM], now, raw, event_id="e-2"),
        "missing": "",
        "garbage": "v1=abc",
    }[how]

    response = post_event(
        client, AM, "deposit_requested", body, raw=raw, signature=signature, event_id="e-1"
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert _nothing_stored()


@pytest.mark.parametrize("age", [301, -301, 3600])
def test_a_timestamp_outside_five_minutes_is_refused_as_a_replay(
    client, practice, site, patient, age
):
    response = post_event(
        client,
        AM,
        "deposit_requested",
        deposit_body(practice, site, patient),
        timestamp=int(time.time()) - age,
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert _nothing_stored()


def test_a_timestamp_within_the_window_is_accepted(client, practice, site, patient):
    response = post_event(
        client,
        AM,
        "deposit_requested",
        deposit_body(practice, site, patient),
        timestamp=int(time.time()) - 240,
    )

    assert response.status_code == 200


def test_an_unknown_module_is_404_even_when_signed(client, practice, site, patient):
    body = deposit_body(practice, site, patient)
    raw = json.dumps(body).encode()
    response = client.post(
        inbound_path("billing_robot", "deposit_requested"),
        data=raw,
        content_type="application/json",
        headers={
            "X-Primoro-Signature": sign(INBOUND_SECRETS[AM], int(time.time()), raw, event_id="x-1"),
            "X-Primoro-Event-Id": "x-1",
        },
    )

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_module"
    assert _nothing_stored()


def test_an_event_type_the_module_does_not_send_is_404_after_authentication(client):
    unsigned = post_event(client, AM, "invoice_matched", {}, signature="")
    signed = post_event(client, AM, "invoice_matched", {})

    assert unsigned.status_code == 401  # nothing is revealed before authentication
    assert signed.status_code == 404
    assert signed.json()["code"] == "unknown_event_type"


def test_a_module_without_a_configured_secret_is_refused(settings, client, practice, site, patient):
    settings.INBOUND_SECRETS = {**INBOUND_SECRETS, AM: ""}

    response = post_event(client, AM, "deposit_requested", deposit_body(practice, site, patient))

    assert response.status_code == 503
    assert response.json()["code"] == "module_not_configured"
    assert _nothing_stored()


def test_an_event_without_an_event_id_is_refused(client, practice, site, patient):
    body = deposit_body(practice, site, patient)
    raw = json.dumps(body).encode()
    response = client.post(
        inbound_path(AM, "deposit_requested"),
        data=raw,
        content_type="application/json",
        headers={
            "X-Primoro-Signature": sign(INBOUND_SECRETS[AM], int(time.time()), raw, event_id="x-1")
        },
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "missing_event_id",
        "message": "Send the event id (at most 200 characters).",
        "field": "X-Primoro-Event-Id",
    }
    assert _nothing_stored()


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_only_post_is_accepted(client, method):
    response = getattr(client, method)(inbound_path(AM, "deposit_requested"))

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_a_duplicate_event_id_gets_the_first_answer_and_changes_nothing(
    client, practice, site, patient
):
    body = deposit_body(practice, site, patient)
    first = post_event(client, AM, "deposit_requested", body, event_id="am-dup")
    counts = (Deposit.objects.count(), Payment.objects.count(), OutboxMessage.objects.count())
    audit_rows = AuditEvent.objects.count()

    again = post_event(client, AM, "deposit_requested", body, event_id="am-dup")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again["X-Primoro-Duplicate"] == "true"
    assert (Deposit.objects.count(), Payment.objects.count(), OutboxMessage.objects.count()) == (
        counts
    )
    assert AuditEvent.objects.count() == audit_rows
    assert InboundEvent.objects.count() == 1


def test_the_same_event_id_with_a_different_body_is_a_conflict(client, practice, site, patient):
    post_event(client, AM, "deposit_requested", deposit_body(practice, site, patient), event_id="e")

    other = post_event(
        client,
        AM,
        "deposit_requested",
        deposit_body(practice, site, patient, appointment_id="APT-2"),
        event_id="e",
    )

    assert other.status_code == 409
    assert other.json()["code"] == "event_id_reused"
    assert Deposit.objects.count() == 1


def test_event_ids_are_per_module(client, practice, site, patient, terminal, reception_actor):
    from tests.payments.helpers import new_payment

    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    post_event(client, AM, "deposit_requested", deposit_body(practice, site, patient), event_id="e")

    rewards = post_event(
        client,
        Module.REWARDS_MANAGER,
        "credit_apply",
        {
            "payment_id": str(payment.id),
            "credit_amount": "10.00",
            "redemption_reference": "R-1",
            "practice_id": str(practice.id),
        },
        event_id="e",
    )

    assert rewards.status_code == 200
    assert InboundEvent.objects.filter(event_id="e").count() == 2


def test_an_invalid_body_is_400_naming_the_field_and_nothing_is_stored(
    client, practice, site, patient
):
    response = post_event(
        client, AM, "deposit_requested", deposit_body(practice, site, patient, amount=12.5)
    )

    assert response.status_code == 400
    assert response.json()["field"] == "amount"
    assert response.json()["code"] == "invalid_field"
    assert _nothing_stored()


def test_a_missing_field_is_400_naming_it(client, practice, site, patient):
    body = deposit_body(practice, site, patient)
    del body["appointment_id"]

    response = post_event(client, AM, "deposit_requested", body)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (
        "missing_field",
        "appointment_id",
    )
    assert _nothing_stored()


def test_a_body_that_is_not_json_is_400(client):
    response = post_event(client, AM, "deposit_requested", None, raw=b"{not json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert _nothing_stored()


def test_a_refused_event_can_be_corrected_and_sent_again_under_the_same_id(
    client, practice, site, patient
):
    bad = post_event(
        client,
        AM,
        "deposit_requested",
        deposit_body(practice, site, patient, patient_id="PMS-NOBODY"),
        event_id="fix-me",
    )
    good = post_event(
        client, AM, "deposit_requested", deposit_body(practice, site, patient), event_id="fix-me"
    )

    assert (bad.status_code, bad.json()["field"]) == (400, "patient_id")
    assert good.status_code == 200
    assert Deposit.objects.count() == 1


def test_a_body_carrying_a_card_number_is_refused_before_anything_is_stored(
    client, practice, site, patient
):
    response = post_event(
        client,
        AM,
        "deposit_requested",
        deposit_body(practice, site, patient, appointment_id="4111 1111 1111 1111"),
    )

    assert response.status_code == 400
    assert response.json()["code"] == "card_number_refused"
    assert _nothing_stored()


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_deliveries_of_one_event_take_effect_once(practice, site, patient):
    body = deposit_body(practice, site, patient)
    barrier = threading.Barrier(2)
    answers = []

    def deliver():
        try:
            barrier.wait(timeout=5)
            response = post_event(Client(), AM, "deposit_requested", body, event_id="race-1")
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [status for status, _ in answers] == [200, 200]
    assert answers[0][1] == answers[1][1]
    assert Deposit.objects.count() == 1
    assert Payment.objects.count() == 1
    assert InboundEvent.objects.count() == 1


def test_a_uuid_whose_digit_groups_pass_luhn_is_not_taken_for_a_card_number(client):
    # "41111111-1111-1111" is Luhn-valid across the dashes; it is still a UUID.
    from tests.factories import PatientFactory, PracticeFactory, SiteFactory

    practice = PracticeFactory(id=uuid.UUID("41111111-1111-1111-abcd-0123456789ab"))
    site = SiteFactory(practice=practice)
    patient = PatientFactory(practice=practice)

    response = post_event(client, AM, "deposit_requested", deposit_body(practice, site, patient))

    assert response.status_code == 200
    assert Deposit.objects.get().practice == practice


def test_an_event_id_with_a_full_stop_is_refused_it_would_blur_the_signed_string(
    client, practice, site, patient
):
    response = post_event(
        client,
        AM,
        "deposit_requested",
        deposit_body(practice, site, patient),
        signature="t=1,v1=0",
        event_id="am.1",
    )

    assert (response.status_code, response.json()["code"]) == (400, "invalid_event_id")
    assert response.json()["field"] == "X-Primoro-Event-Id"
    assert _nothing_stored()
