"""The receiver: signature first (498), store each handled event once, 204 when none is ours."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, WebhookEvent
from integrations.simulators import gocardless, signing
from subscriptions.models import SubscriptionPayment
from tests.subscriptions.conftest import (
    SECRET,
    WEBHOOK_PATH,
    gc_event,
    gocardless_events,
    metadata_for,
    outbox,
    post_events,
    publish,
    scenario,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def _unhandled_events() -> list[dict]:
    return [
        gc_event("updated", resource_type="creditors", links={"creditor": "CR123"}, at=NOW),
        gc_event("created", resource_type="subscriptions", links={"subscription": "SB1"}, at=NOW),
        gc_event("surcharge_fee_debited", links={"payment": "PM1"}, at=NOW),
        gc_event("fx_rate_confirmed", resource_type="payouts", links={"payout": "PO1"}, at=NOW),
    ]


def _post_raw(client, body: bytes, signature: str | None):
    headers = {} if signature is None else {"HTTP_WEBHOOK_SIGNATURE": signature}
    return client.post(WEBHOOK_PATH, data=body, content_type="application/json", **headers)


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        signing.gocardless_signature(b"another body", SECRET),
        "not-hex",
        "0" * 64,
    ],
)
def test_a_bad_signature_is_answered_498_and_nothing_is_stored(
    client, gc_api, practice, patient, signature
):
    events = scenario("payment_failed", practice, patient).events
    body = gocardless.webhook_body(events)

    response = _post_raw(client, body, signature)

    assert response.status_code == 498
    assert gocardless_events() == []
    assert SubscriptionPayment.objects.count() == 0


def test_a_body_signed_with_another_secret_is_refused(client, gc_api, practice, patient):
    events = scenario("payment_confirmed", practice, patient).events

    response = post_events(client, events, secret="not-our-secret")

    assert response.status_code == 498
    assert gocardless_events() == []


@pytest.mark.django_db(transaction=True)
def test_a_webhook_the_simulator_signs_with_another_secret_is_498_over_http(
    live_server, gc_api, practice, patient
):
    built, delivery = gocardless.send_scenario(
        "payment_failed",
        url=f"{live_server.url}{WEBHOOK_PATH}",
        secret="a-secret-gocardless-was-never-given",
        api_url=gc_api,
        mandate_metadata=metadata_for(practice, patient),
    )

    assert delivery.status_code == 498
    assert delivery.headers["Webhook-Signature"] == signing.gocardless_signature(
        delivery.body, "a-secret-gocardless-was-never-given"
    )
    assert built.events and gocardless_events() == []
    assert SubscriptionPayment.objects.count() == 0


def test_the_signature_is_checked_before_the_body_is_parsed(client, gc_api):
    response = _post_raw(client, b"{not json", "0" * 64)

    assert response.status_code == 498


def test_a_signed_body_that_is_not_json_is_a_bad_request(client, gc_api):
    body = b"{not json"

    response = _post_raw(client, body, signing.gocardless_signature(body, SECRET))

    assert response.status_code == 400
    assert gocardless_events() == []


def test_more_than_250_events_is_a_bad_request(client, gc_api):
    events = [gc_event("confirmed", links={"payment": f"PM{i:06d}"}, at=NOW) for i in range(251)]

    response = post_events(client, events)

    assert response.status_code == 400
    assert gocardless_events() == []


def test_only_post_is_accepted(client, gc_api):
    assert client.get(WEBHOOK_PATH).status_code == 405


def test_events_we_do_not_handle_are_answered_204_and_not_stored(client, gc_api):
    response = post_events(client, _unhandled_events())

    assert response.status_code == 204
    assert response.content == b""
    assert gocardless_events() == []


def test_a_mixed_batch_stores_only_the_events_we_handle(client, gc_api, practice, patient):
    ours = scenario("payment_failed", practice, patient).events

    response = post_events(client, _unhandled_events() + ours)

    assert response.status_code == 200
    assert response.json() == {"received": 5, "stored": 1, "duplicates": 0, "not_handled": 4}
    [stored] = gocardless_events()
    assert stored.event_id == ours[0]["id"]
    assert stored.event_type == "payments.failed"
    assert stored.resource_ref == ours[0]["links"]["payment"]
    assert stored.body == ours[0]


def test_a_redelivered_webhook_changes_nothing_twice(deliver, gc_api, practice, patient):
    failed = scenario("payment_failed", practice, patient)
    publish(gc_api, failed)

    first = deliver(failed.events)
    again = deliver(failed.events)

    assert first.status_code == 200 and again.status_code == 200
    assert json.loads(again.content)["duplicates"] == 1
    assert len(gocardless_events()) == 1
    payment = SubscriptionPayment.objects.get()
    assert payment.state == "failed"
    payment_audits = AuditEvent.objects.filter(
        event_type=EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED,
        subject_type="subscription_payment",
    )
    assert payment_audits.count() == 1
    assert len(outbox(Destination.TASK_MANAGER)) == 1
    assert len(outbox(Destination.CARE_PLAN)) == 1
    assert len(outbox(Destination.FINANCIAL_INSIGHTS)) == 1


def test_stored_events_are_processed_by_the_registered_handler(deliver, gc_api, practice, patient):
    confirmed = scenario("payment_confirmed", practice, patient)
    publish(gc_api, confirmed)

    deliver(confirmed.events)

    [event] = gocardless_events()
    assert event.status == WebhookEvent.Status.PROCESSED
    assert event.practice_id == practice.id
    assert event.processed_at is not None
