"""Fees from the payout, carried into the PMS writeback, or into its fallback task (§13.2.13)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from integrations.pms.services import FALLBACK_TASK_TYPE
from integrations.relay import relay_until_idle
from practices.models import PmsWritebackMode
from subscriptions.models import SubscriptionPayment
from tests.subscriptions.conftest import gc_event, outbox, publish, scenario, sim_requests

pytestmark = pytest.mark.django_db

# A £50.00 payment: GoCardless 1 % + 20p = 70p + 14p VAT = 84p, and a 25p app fee.
FEES = {
    "payout_id": None,  # filled per test
    "currency": "GBP",
    "gocardless_fee": "0.84",
    "app_fee": "0.25",
    "surcharge_fee": "0.00",
    "tax": "0.14",
    "total": "1.09",
    "vat_included": True,
    "minor_units": {
        "gocardless_fee": 84,
        "app_fee": 25,
        "surcharge_fee": 0,
        "tax": 14,
        "total": 109,
    },
}


@pytest.fixture
def paid_out(deliver, gc_api, practice, patient):
    built = scenario("payment_paid_out", practice, patient, mandate_ref="PMREF-FEES", amount=5000)
    publish(gc_api, built)
    deliver(built.events)
    return built


def _fees(built) -> dict:
    return {**FEES, "payout_id": built.events[0]["links"]["payout"]}


def test_fees_are_read_from_the_payout_and_stored(paid_out, gc_api):
    payment = SubscriptionPayment.objects.get()
    payout_id = paid_out.events[0]["links"]["payout"]

    assert payment.payout_id == payout_id
    assert (payment.fee_gocardless, payment.fee_app, payment.fee_surcharge) == (
        Decimal("0.84"),
        Decimal("0.25"),
        Decimal("0.00"),
    )
    assert (payment.fee_tax, payment.fee_total, payment.fee_currency) == (
        Decimal("0.14"),
        Decimal("1.09"),
        "GBP",
    )
    assert payment.fees_minor == FEES["minor_units"]
    paths = [r["path"] for r in sim_requests(gc_api) if not r["path"].startswith("/sim/")]
    assert f"/payouts/{payout_id}" in paths and "/payout_items" in paths
    assert {r["method"] for r in sim_requests(gc_api) if not r["path"].startswith("/sim/")} == {
        "GET"
    }


def test_the_pms_writeback_carries_the_fees(paid_out, relay_settings, pms_sim):
    payment = SubscriptionPayment.objects.get()
    [row] = outbox(Destination.PMS)
    assert row.event_type == "subscription.payment.paid_out"
    assert row.payload["fees"] == _fees(paid_out)

    relay_until_idle(time_budget=10)

    [writeback] = pms_sim.writebacks
    assert writeback["type"] == "subscription.payment.paid_out"
    assert writeback["writeback"]["kind"] == "paid"
    assert writeback["writeback"]["fees"] == _fees(paid_out)
    assert writeback["writeback"]["amount"] == "50.00"
    assert writeback["writeback"]["billable_target"]["type"] == "subscription"
    assert writeback["payload"]["payment_mandate_ref"] == "PMREF-FEES"
    assert writeback["payload"]["provider_reference"] == payment.gocardless_payment_id
    row.refresh_from_db()
    assert row.status == OutboxMessage.Status.DELIVERED


def test_an_unsupported_pms_gets_a_fallback_task_with_the_fees(
    deliver, gc_api, practice, patient, relay_settings, pms_sim
):
    practice.pms_writeback_mode = PmsWritebackMode.UNSUPPORTED
    practice.save()
    built = scenario("payment_paid_out", practice, patient, mandate_ref="PMREF-FALLBACK")
    publish(gc_api, built)
    deliver(built.events)

    relay_until_idle(time_budget=10)

    assert pms_sim.writebacks == []
    [task] = OutboxMessage.objects.filter(
        destination=Destination.TASK_MANAGER, payload__task_type=FALLBACK_TASK_TYPE
    )
    assert task.payload["fees"] == _fees(built)
    assert task.payload["writeback"]["payment_mandate_ref"] == "PMREF-FALLBACK"
    assert task.payload["amount"] == "50.00"
    [failed] = AuditEvent.objects.filter(event_type=EventType.PMS_WRITEBACK_FAILED)
    assert failed.payload["fees"] == _fees(built)
    assert failed.provider_reference == built.events[0]["links"]["payment"]


def test_a_confirmed_payment_waits_for_its_payout_before_the_writeback(
    deliver, gc_api, practice, patient
):
    built = scenario("payment_confirmed", practice, patient)
    publish(gc_api, built)

    deliver(built.events)

    assert SubscriptionPayment.objects.get().state == "paid"
    assert outbox(Destination.PMS) == []
    assert len(outbox(Destination.FINANCIAL_INSIGHTS, "subscription.payment.received")) == 1


def test_fees_arriving_before_the_paid_status_are_written_back_once_it_is_paid(
    deliver, gc_api, practice, patient
):
    built = scenario("payment_paid_out", practice, patient)
    payment_id = built.events[0]["links"]["payment"]
    payout_event = built.events[1]
    built.resources["payments"][0]["status"] = "submitted"
    publish(gc_api, built)
    deliver([gc_event("submitted", links={"payment": payment_id}, at=timezone.now())])

    deliver([payout_event])  # payouts.paid processed while we still think it is submitted

    payment = SubscriptionPayment.objects.get()
    assert (payment.state, payment.fee_total) == ("payment_pending", Decimal("1.09"))
    assert outbox(Destination.PMS) == []

    later = payment.last_event_created_at
    deliver([gc_event("confirmed", links={"payment": payment_id}, at=later + timedelta(seconds=1))])
    deliver([gc_event("paid_out", links={"payment": payment_id}, at=later + timedelta(seconds=2))])

    [row] = outbox(Destination.PMS)
    assert row.payload["fees"]["total"] == "1.09"
    assert SubscriptionPayment.objects.get().pms_writeback_queued_at is not None


def test_fees_are_recorded_once_when_both_payout_events_arrive(paid_out, deliver, gc_api):
    audits_before = AuditEvent.objects.filter(payload__change="payout_fees").count()

    deliver([dict(paid_out.events[1], id="EV000000AGAIN")])  # another payouts.paid

    assert audits_before == 1
    assert AuditEvent.objects.filter(payload__change="payout_fees").count() == 1
    assert len(outbox(Destination.PMS)) == 1
