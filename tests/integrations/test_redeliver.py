"""Dead letters for finance admins: visible in the admin, redelivered in one click, audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from integrations.outbox import _publish_relay
from integrations.relay import outbox_redeliver, relay_due
from practices.access import NotPermitted
from practices.roles import Role
from tests.factories import PracticeFactory, make_staff
from tests.integrations.conftest import capture_payment, enqueue

pytestmark = pytest.mark.django_db

Status = OutboxMessage.Status
CHANGELIST = "admin:integrations_outboxmessage_changelist"


@pytest.fixture
def finance_admin(practice):
    return make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)


@pytest.fixture
def dead_row(relay_settings, sink, practice):
    sink.mode = "reject"
    row = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 1})
    relay_due()
    row.refresh_from_db()
    assert row.status == Status.DEAD
    sink.mode = "ok"
    return row


def test_a_finance_admin_redelivers_a_dead_letter_and_it_is_audited(
    dead_row, sink, finance_admin, practice
):
    count = outbox_redeliver(message_ids=[dead_row.id], actor=Actor.staff(finance_admin))

    dead_row.refresh_from_db()
    assert (count, dead_row.status, dead_row.attempts) == (1, Status.PENDING, 0)
    (event,) = AuditEvent.objects.filter(event_type=EventType.OUTBOX_REDELIVERED)
    assert event.practice_id == practice.id
    assert event.actor_id == str(finance_admin.pk)
    assert event.payload["messages"][0]["event_id"] == str(dead_row.id)
    assert event.payload["messages"][0]["previous_status"] == "dead"
    relay_due()
    dead_row.refresh_from_db()
    assert dead_row.status == Status.DELIVERED
    assert list(sink.stored) == [str(dead_row.id)]


def test_reception_may_not_redeliver(dead_row, reception):
    with pytest.raises(NotPermitted):
        outbox_redeliver(message_ids=[dead_row.id], actor=Actor.staff(reception))

    dead_row.refresh_from_db()
    assert dead_row.status == Status.DEAD
    assert not AuditEvent.objects.filter(event_type=EventType.OUTBOX_REDELIVERED).exists()


def test_a_finance_admin_of_another_practice_may_not_redeliver(dead_row):
    outsider = make_staff(Role.FINANCE_ADMIN, practice=PracticeFactory())

    with pytest.raises(NotPermitted):
        outbox_redeliver(message_ids=[dead_row.id], actor=Actor.staff(outsider))

    dead_row.refresh_from_db()
    assert dead_row.status == Status.DEAD


def test_pending_and_delivered_rows_are_left_alone(
    relay_settings, sink, finance_admin, practice, dead_row
):
    delivered = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 2})
    relay_due()
    pending = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 3})

    count = outbox_redeliver(
        message_ids=[dead_row.id, delivered.id, pending.id], actor=Actor.staff(finance_admin)
    )

    assert count == 1
    delivered.refresh_from_db()
    assert (delivered.status, delivered.attempts) == (Status.DELIVERED, 1)


def test_redelivery_asks_for_a_relay_after_commit(
    dead_row, relay_settings, sink, finance_admin, django_capture_on_commit_callbacks
):
    relay_settings.OUTBOX_RELAY_ON_COMMIT = True
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        outbox_redeliver(message_ids=[dead_row.id], actor=Actor.staff(finance_admin))

    assert callbacks.count(_publish_relay) == 1
    dead_row.refresh_from_db()
    assert dead_row.status == Status.DELIVERED  # eager Celery ran the relay task


def test_a_payment_transaction_asks_for_one_relay_however_many_rows_it_writes(
    relay_settings,
    sink,
    practice,
    site,
    patient,
    system_actor,
    provider_actor,
    django_capture_on_commit_callbacks,
):
    relay_settings.OUTBOX_RELAY_ON_COMMIT = True
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        payment = capture_payment(system_actor, provider_actor, practice, site, patient)

    rows = OutboxMessage.objects.filter(payment_id=payment.id)
    assert rows.count() == 3
    # create, await and capture are three transactions; only capture wrote rows.
    assert callbacks.count(_publish_relay) == 1
    assert {r.status for r in rows} == {Status.DELIVERED}


# --- The admin -------------------------------------------------------------------------------


def test_the_admin_lists_dead_and_disabled_rows_for_a_finance_admin(
    client, dead_row, finance_admin, relay_settings, sink
):
    endpoints = dict(relay_settings.OUTBOX_ENDPOINTS)
    endpoints[Destination.TELEPHONY] = {"url": "", "secret": ""}
    relay_settings.OUTBOX_ENDPOINTS = endpoints
    client.force_login(finance_admin)

    response = client.get(reverse(CHANGELIST), {"status": "dead"})

    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("admin:integrations_outboxmessage_change", args=[dead_row.id]) in body
    assert "HTTP 400" in body
    assert "Disabled destinations (no endpoint configured): telephony" in body
    assert response.context["cl"].result_count == 1


def test_the_admin_shows_only_the_admins_own_practice(client, dead_row, finance_admin):
    other = PracticeFactory()
    enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", other, {"n": 9})
    client.force_login(finance_admin)

    response = client.get(reverse(CHANGELIST))

    assert response.context["cl"].result_count == 1


def test_the_admin_redeliver_action(client, dead_row, finance_admin):
    client.force_login(finance_admin)

    response = client.post(
        reverse(CHANGELIST),
        {"action": "redeliver", "_selected_action": [str(dead_row.id)]},
        follow=True,
    )

    assert response.status_code == 200
    assert "1 message(s) queued for redelivery." in response.content.decode()
    dead_row.refresh_from_db()
    assert dead_row.status == Status.PENDING


def test_the_admin_is_closed_to_reception(client, dead_row, practice):
    receptionist = make_staff(Role.RECEPTION, practice=practice, is_staff=True)
    client.force_login(receptionist)

    response = client.get(reverse(CHANGELIST))

    assert response.status_code == 403


def test_the_admin_never_edits_or_deletes_rows(client, dead_row, finance_admin):
    client.force_login(finance_admin)
    change_url = reverse("admin:integrations_outboxmessage_change", args=[dead_row.id])

    response = client.post(change_url, {"status": "delivered"})

    assert response.status_code == 403
    dead_row.refresh_from_db()
    assert dead_row.status == Status.DEAD
    assert client.get(reverse(CHANGELIST) + "add/").status_code == 403
