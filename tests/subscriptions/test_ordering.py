"""Out of order, duplicated, 250 at a time: a status never moves backwards wrongly or twice."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from integrations.models import Destination
from subscriptions.models import SubscriptionPayment
from tests.subscriptions.conftest import gc_event, gocardless_events, outbox, publish, scenario

pytestmark = pytest.mark.django_db


def _payment_audits(payment):
    return list(
        AuditEvent.objects.filter(
            subject_type="subscription_payment", subject_id=str(payment.id)
        ).order_by("seq")
    )


@pytest.fixture
def pending_payment(deliver, gc_api, practice, patient):
    """A payment we know in `pending_submission`, registered from GoCardless's API."""
    built = scenario("payment_confirmed", practice, patient, mandate_ref="PMREF-ORDER-1")
    built.resources["payments"][0]["status"] = "pending_submission"
    publish(gc_api, built)
    payment_id = built.events[0]["links"]["payment"]
    deliver([gc_event("created", links={"payment": payment_id}, at=timezone.now())])
    payment = SubscriptionPayment.objects.get(gocardless_payment_id=payment_id)
    assert payment.gocardless_status == "pending_submission"
    return payment


def _later(payment, seconds: float):
    """A moment after the record last learned anything (GoCardless's clock moving on)."""
    return payment.last_event_created_at + timedelta(seconds=seconds)


def test_an_older_submitted_after_paid_out_changes_nothing(deliver, pending_payment):
    link = {"payment": pending_payment.gocardless_payment_id}
    submitted = gc_event("submitted", links=link, at=_later(pending_payment, 1))
    confirmed = gc_event("confirmed", links=link, at=_later(pending_payment, 2))
    paid_out = gc_event("paid_out", links=link, at=_later(pending_payment, 3))

    deliver([paid_out])
    audits_after_paid_out = len(_payment_audits(pending_payment))
    deliver([submitted, confirmed])

    pending_payment.refresh_from_db()
    assert (pending_payment.gocardless_status, pending_payment.state) == ("paid_out", "paid")
    assert pending_payment.last_event_id == paid_out["id"]
    assert len(_payment_audits(pending_payment)) == audits_after_paid_out
    assert len(outbox(Destination.FINANCIAL_INSIGHTS, "subscription.payment.received")) == 1
    assert {e.status for e in gocardless_events()} == {"processed"}


def test_events_in_one_webhook_in_reverse_order_end_in_the_newest(deliver, pending_payment):
    link = {"payment": pending_payment.gocardless_payment_id}
    events = [
        gc_event(action, links=link, at=_later(pending_payment, n))
        for n, action in enumerate(["submitted", "confirmed", "paid_out"], start=1)
    ]

    deliver(list(reversed(events)))

    pending_payment.refresh_from_db()
    assert pending_payment.gocardless_status == "paid_out"
    transitions = [(a.from_state, a.to_state) for a in _payment_audits(pending_payment)]
    assert transitions == [("", "payment_pending"), ("payment_pending", "paid")]


def test_at_the_same_instant_the_status_further_along_wins(deliver, pending_payment):
    link = {"payment": pending_payment.gocardless_payment_id}
    moment = _later(pending_payment, 1)

    deliver([gc_event("paid_out", links=link, at=moment)])
    deliver([gc_event("confirmed", links=link, at=moment)])

    pending_payment.refresh_from_db()
    assert pending_payment.gocardless_status == "paid_out"


def test_a_resubmitted_payment_fails_then_is_paid_with_each_outcome_signalled_once(
    deliver, pending_payment
):
    link = {"payment": pending_payment.gocardless_payment_id}
    failed = gc_event("failed", links=link, at=_later(pending_payment, 1), cause="refer_to_payer")
    resubmitted = gc_event("resubmission_requested", links=link, at=_later(pending_payment, 2))
    submitted = gc_event("submitted", links=link, at=_later(pending_payment, 3))
    confirmed = gc_event("confirmed", links=link, at=_later(pending_payment, 4))

    deliver([confirmed, failed])  # the newest first
    deliver([submitted, resubmitted, failed])  # and a duplicate of an old one

    pending_payment.refresh_from_db()
    assert (pending_payment.gocardless_status, pending_payment.state) == ("confirmed", "paid")
    assert pending_payment.failure_cause == ""
    types = [(m.destination, m.event_type) for m in outbox()]
    assert types.count((Destination.FINANCIAL_INSIGHTS, "subscription.payment.received")) == 1
    assert types.count((Destination.FINANCIAL_INSIGHTS, "subscription.payment.failed")) == 0
    assert len(gocardless_events()) == 5  # with the fixture's `created`


def test_a_failure_then_a_newer_resubmission_is_signalled_in_order(deliver, pending_payment):
    link = {"payment": pending_payment.gocardless_payment_id}

    deliver([gc_event("failed", links=link, at=_later(pending_payment, 1))])
    deliver([gc_event("resubmission_requested", links=link, at=_later(pending_payment, 2))])
    deliver([gc_event("confirmed", links=link, at=_later(pending_payment, 3))])

    pending_payment.refresh_from_db()
    assert pending_payment.state == "paid"
    transitions = [(a.from_state, a.to_state) for a in _payment_audits(pending_payment)]
    assert transitions == [
        ("", "payment_pending"),
        ("payment_pending", "failed"),
        ("failed", "payment_pending"),
        ("payment_pending", "paid"),
    ]
    assert [m.event_type for m in outbox(Destination.CARE_PLAN)] == [
        "subscription.payment.failed",
        "subscription.payment.received",
    ]
    assert len(outbox(Destination.TASK_MANAGER)) == 1


def test_the_same_event_twice_in_one_webhook_is_stored_and_applied_once(deliver, pending_payment):
    link = {"payment": pending_payment.gocardless_payment_id}
    failed = gc_event("failed", links=link, at=_later(pending_payment, 1))

    response = deliver([failed, dict(failed)])

    assert response.json()["duplicates"] == 1
    assert len(outbox(Destination.TASK_MANAGER)) == 1
    assert len(_payment_audits(pending_payment)) == 2


def test_250_events_in_one_request(deliver, gc_api, practice, patient):
    """50 payments, each told created → submitted → confirmed, plus repeats and noise, shuffled."""
    built = [
        scenario("payment_confirmed", practice, patient, subscription_id=f"CP-{n}")
        for n in range(50)
    ]
    for b in built:
        b.resources["payments"][0]["status"] = "pending_submission"
        publish(gc_api, b)
    payment_ids = [b.events[0]["links"]["payment"] for b in built]
    registration = timezone.now()
    deliver([gc_event("created", links={"payment": p}, at=registration) for p in payment_ids])
    base = timezone.now() + timedelta(seconds=1)
    events = []
    for n, payment_id in enumerate(payment_ids):
        link = {"payment": payment_id}
        submitted = gc_event("submitted", links=link, at=base + timedelta(milliseconds=n))
        confirmed = gc_event(
            "confirmed", links=link, at=base + timedelta(seconds=1, milliseconds=n)
        )
        approved = gc_event(
            "customer_approval_granted", links=link, at=base - timedelta(milliseconds=n)
        )
        noise = gc_event("updated", resource_type="creditors", links={"creditor": "CR1"}, at=base)
        events += [submitted, confirmed, approved, noise, dict(confirmed)]
    random.Random(250).shuffle(events)
    assert len(events) == 250

    response = deliver(events)

    assert response.status_code == 200
    assert response.json() == {"received": 250, "stored": 150, "duplicates": 50, "not_handled": 50}
    payments = SubscriptionPayment.objects.filter(gocardless_payment_id__in=payment_ids)
    assert sorted(p.gocardless_status for p in payments) == ["confirmed"] * 50
    received = outbox(Destination.FINANCIAL_INSIGHTS, "subscription.payment.received")
    assert sorted(m.payload["gocardless_payment_id"] for m in received) == sorted(payment_ids)
    assert {e.status for e in gocardless_events()} == {"processed"}
    assert set(
        AuditEvent.objects.filter(subject_type="subscription_payment").values_list(
            "mandate_reference", flat=True
        )
    ) == {b.resources["mandates"][0]["reference"] for b in built}
