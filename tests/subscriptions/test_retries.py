"""GoCardless events that cannot be processed: retried with backoff, parked, reprocessed.

Everything goes through the real receiver and the GoCardless API simulator:
an outage is the simulator answering 503 (here on the payout a paid-out
payment's fees are read from), and a broken event is one our own code cannot
store (an event id longer than the records' 64 characters).
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, WebhookEvent
from integrations.tasks import sweep_webhook_events
from integrations.webhooks import PARKED_TASK_TYPE, webhook_event_process
from practices.roles import Role
from subscriptions.models import SubscriptionMandate, SubscriptionPayment
from tests.factories import PracticeFactory, make_staff
from tests.subscriptions.conftest import (
    gocardless_events,
    outbox,
    post_events,
    publish,
    scenario,
)

pytestmark = pytest.mark.django_db

Status = WebhookEvent.Status
ADMIN_LIST = "/admin/integrations/webhookevent/"


@pytest.fixture(autouse=True)
def retry_settings(settings):
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 60.0
    settings.WEBHOOK_BACKOFF_CAP_SECONDS = 6 * 3600.0
    settings.WEBHOOK_RETRY_WINDOW_SECONDS = 48 * 3600
    settings.WEBHOOK_MAX_ERROR_ATTEMPTS = 2


@pytest.fixture
def confirmed(deliver, gc_api, practice, patient):
    """A subscription payment we know, confirmed; its payout comes later."""
    built = scenario("payment_confirmed", practice, patient, mandate_ref="PMREF-PAID")
    publish(gc_api, built)
    deliver(built.events)
    return SubscriptionPayment.objects.get()


def _paid_out(gc_api, practice, patient, payment) -> dict:
    """GoCardless pays the payment out: its `payments.paid_out` event (resources published)."""
    built = scenario(
        "payment_paid_out",
        practice,
        patient,
        payment_id=payment.gocardless_payment_id,
        mandate_id=payment.mandate.gocardless_mandate_id,
        mandate_ref="PMREF-PAID",
    )
    publish(gc_api, built)
    return built.events[0]


@pytest.fixture
def known_mandate(deliver, gc_api, practice, patient):
    """A care plan mandate we already know (its events name our practice)."""
    built = scenario("mandate_active", practice, patient, mandate_ref="PMREF-RETRY")
    publish(gc_api, built)
    deliver(built.events)
    return SubscriptionMandate.objects.get()


def _fault(api_url: str, prefix: str, count: int) -> None:
    body = {"path_prefix": prefix, "mode": "503", "count": count}
    assert httpx.post(f"{api_url}/sim/faults", json=body, timeout=5).status_code == 201


def _parked_tasks():
    return [
        m for m in outbox(Destination.TASK_MANAGER) if m.payload["task_type"] == PARKED_TASK_TYPE
    ]


def _reprocess(client, django_capture_on_commit_callbacks, event):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(
            ADMIN_LIST,
            {"action": "reprocess", "_selected_action": [event.pk]},
            follow=True,
        )


def test_an_outage_is_retried_for_hours_then_parked_then_reprocessed_by_finance(
    deliver, gc_api, practice, patient, confirmed, client, django_capture_on_commit_callbacks
):
    paid_out = _paid_out(gc_api, practice, patient, confirmed)
    _fault(gc_api, "/payouts/", count=3)

    deliver([paid_out])

    [event] = gocardless_events(Status.FAILED)
    assert "503" in event.last_error and event.next_attempt_at > event.received_at
    # Still down almost two days later: still retrying (the window is two days).
    assert webhook_event_process(event.pk, now=event.received_at + timedelta(hours=47)) == (
        Status.FAILED
    )
    event.refresh_from_db()
    assert event.attempts == 2
    assert event.next_attempt_at > event.received_at + timedelta(hours=47)
    assert webhook_event_process(event.pk, now=event.received_at + timedelta(hours=48)) == (
        Status.PARKED
    )
    event.refresh_from_db()
    assert event.practice_id == practice.id  # from the known payment, without asking GoCardless
    [task] = _parked_tasks()
    assert task.practice_id == practice.id
    assert task.payload["event_id"] == paid_out["id"] and "503" in task.payload["detail"]
    confirmed.refresh_from_db()
    assert (confirmed.gocardless_status, confirmed.has_fees) == ("confirmed", False)

    finance = make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)
    client.force_login(finance)
    listed = client.get(ADMIN_LIST, {"status__exact": "parked"})
    assert listed.status_code == 200 and paid_out["id"] in listed.content.decode()
    page = _reprocess(client, django_capture_on_commit_callbacks, event)

    assert "1 event(s) queued for processing." in page.content.decode()
    event.refresh_from_db()
    assert event.status == Status.PROCESSED and event.attempts == 1
    confirmed.refresh_from_db()
    assert (confirmed.gocardless_status, confirmed.has_fees) == ("paid_out", True)
    [audit] = AuditEvent.objects.filter(event_type=EventType.WEBHOOK_EVENT_REPROCESSED)
    assert audit.practice_id == practice.id and audit.actor_id == str(finance.pk)
    assert audit.payload["events"][0]["previous_status"] == "parked"
    assert audit.payload["events"][0]["event_id"] == paid_out["id"]


def test_reprocessing_needs_finance_rights_at_the_events_practice(
    deliver, gc_api, practice, patient, confirmed, client, django_capture_on_commit_callbacks
):
    _fault(gc_api, "/payouts/", count=2)
    deliver([_paid_out(gc_api, practice, patient, confirmed)])
    [event] = gocardless_events(Status.FAILED)
    webhook_event_process(event.pk, now=event.received_at + timedelta(hours=49))
    event.refresh_from_db()
    assert event.status == Status.PARKED

    outsider = make_staff(Role.FINANCE_ADMIN, practice=PracticeFactory(), is_staff=True)
    client.force_login(outsider)
    assert str(event.event_id) not in client.get(ADMIN_LIST).content.decode()
    _reprocess(client, django_capture_on_commit_callbacks, event)
    reception = make_staff(Role.RECEPTION, practice=practice, is_staff=True)
    client.force_login(reception)
    assert client.get(ADMIN_LIST).status_code == 403

    event.refresh_from_db()
    assert event.status == Status.PARKED
    assert not AuditEvent.objects.filter(event_type=EventType.WEBHOOK_EVENT_REPROCESSED).exists()


def test_an_event_our_code_cannot_store_does_not_block_the_sweep(
    client, gc_api, practice, patient, known_mandate, settings
):
    """A signed event whose id is longer than the records keep (64) makes the handler raise."""
    broken = scenario(
        "mandate_cancelled", practice, patient, mandate_id=known_mandate.gocardless_mandate_id
    )
    broken.events[0]["id"] = "EV" + "X" * 70
    later = scenario(
        "payment_confirmed", practice, patient, mandate_id=known_mandate.gocardless_mandate_id
    )
    publish(gc_api, later)
    # Stored but not yet processed (the task messages were lost): the sweep's job.
    assert post_events(client, broken.events).status_code == 200
    assert post_events(client, later.events).status_code == 200
    assert {e.status for e in gocardless_events()} == {Status.PROCESSED, Status.RECEIVED}

    assert sweep_webhook_events() == 2

    bad = WebhookEvent.objects.get(event_id=broken.events[0]["id"])
    good = WebhookEvent.objects.get(event_id=later.events[0]["id"])
    assert good.status == Status.PROCESSED
    assert SubscriptionPayment.objects.get().state == "paid"
    assert (bad.status, bad.attempts) == (Status.FAILED, 1)
    assert bad.last_error.startswith("DataError")
    assert SubscriptionMandate.objects.get().state == "active_mandate"  # nothing half-applied
    assert sweep_webhook_events() == 0  # not due again yet

    assert webhook_event_process(bad.pk) == Status.PARKED  # WEBHOOK_MAX_ERROR_ATTEMPTS = 2
    bad.refresh_from_db()
    assert bad.practice_id == practice.id
    [task] = _parked_tasks()
    assert task.payload["event_id"] == bad.event_id and "DataError" in task.payload["detail"]
