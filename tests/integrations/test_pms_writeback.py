"""PMS writeback (§6.3): only captured payments as paid, pending markers where declared,
fee data carried, and a fallback task plus `pms_writeback.failed` whenever it cannot happen."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from integrations.pms.services import FALLBACK_TASK_TYPE
from integrations.relay import encode, relay_due
from integrations.signing import signed_headers
from payments import services
from payments.models import PaymentMethod, PmsWritebackStatus, TargetType
from practices.models import PmsWritebackMode
from tests.integrations.conftest import (
    SECRETS,
    capture_payment,
    create_payment,
    endpoint_settings,
    enqueue,
)

pytestmark = pytest.mark.django_db

Status = OutboxMessage.Status


def _pms_rows(payment):
    return list(
        OutboxMessage.objects.filter(destination=Destination.PMS, payment_id=payment.id).order_by(
            "occurred_at"
        )
    )


def _fallback_tasks():
    return list(
        OutboxMessage.objects.filter(
            destination=Destination.TASK_MANAGER, payload__task_type=FALLBACK_TASK_TYPE
        )
    )


def _failed_audits(payment_id=None):
    events = AuditEvent.objects.filter(event_type=EventType.PMS_WRITEBACK_FAILED)
    if payment_id:
        events = events.filter(payment_id=payment_id)
    return list(events)


def _relay_passes(count):
    for _ in range(count):
        relay_due()
        time.sleep(0.25)


# --- Written ----------------------------------------------------------------------------


def test_a_captured_payment_is_written_as_paid_in_the_same_pass_as_its_financial_signal(
    relay_settings, sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    payment = capture_payment(
        system_actor, provider_actor, practice, site, patient, amount="95.00", target_id="INV-9"
    )
    assert payment.pms_writeback_status == PmsWritebackStatus.PENDING

    stats = relay_due()

    # §13.2.12: the Financial Signal and the writeback go out in one relay pass.
    assert stats.delivered == 3
    (row,) = _pms_rows(payment)
    assert row.status == Status.DELIVERED
    (writeback,) = pms_sim.writebacks
    assert writeback["type"] == "payment.captured"
    assert writeback["writeback"] == {
        "kind": "paid",
        "invoice_ref": "INV-9",
        "billable_target": {"type": "invoice", "id": "INV-9", "pms_invoice_ref": "INV-9"},
        "patient_id": str(patient.id),
        "amount": "95.00",
        "currency": "GBP",
        "payment_ids": [str(payment.id)],
        "fees": None,
    }
    assert pms_sim.received[0].signature_valid is True
    payment.refresh_from_db()
    assert payment.pms_writeback_status == PmsWritebackStatus.WRITTEN
    assert _fallback_tasks() == []
    assert _failed_audits() == []


def test_a_refund_is_written_back_after_the_payment_and_in_that_order(
    relay_settings, pms_sim, practice, site, patient, reception_actor, manager_actor
):
    payment = create_payment(
        reception_actor, practice, site, patient, method=PaymentMethod.CASH, amount="60.00"
    )
    services.tender_record_received(payment_id=payment.id, actor=reception_actor)
    services.refund_request(
        payment_id=payment.id, actor=manager_actor, amount="15.00", reason_code="billing_error"
    )

    first = relay_due()
    second = relay_due()

    # The refund waits for the payment's writeback, then follows in the next batch.
    assert (first.delivered, second.delivered) == (5, 1)

    assert [
        (w["type"], w["writeback"]["kind"], w["writeback"]["amount"]) for w in pms_sim.writebacks
    ] == [
        ("payment.captured", "paid", "60.00"),
        ("refund.completed", "refund", "15.00"),
    ]
    payment.refresh_from_db()
    assert payment.pms_writeback_status == PmsWritebackStatus.WRITTEN


def test_a_split_is_written_once_for_all_its_tenders(
    relay_settings, pms_sim, practice, site, patient, reception_actor
):
    split = services.split_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-SPLIT",
        amount_due="100.00",
        tenders=[
            services.TenderSpec(method=PaymentMethod.CASH, amount=Decimal("40.00")),
            services.TenderSpec(method=PaymentMethod.VOUCHER, amount=Decimal("60.00")),
        ],
    )
    tenders = list(split.tenders.order_by("amount"))
    for tender in tenders:
        services.tender_record_received(payment_id=tender.id, actor=reception_actor)

    relay_due()

    (writeback,) = pms_sim.writebacks
    assert writeback["type"] == "split.settled"
    assert writeback["writeback"]["amount"] == "100.00"
    assert sorted(writeback["writeback"]["payment_ids"]) == sorted(str(t.id) for t in tenders)
    for tender in tenders:
        tender.refresh_from_db()
        assert tender.pms_writeback_status == PmsWritebackStatus.WRITTEN


def test_a_redelivered_writeback_is_recorded_once_by_the_pms(pms_sim, practice):
    body = encode({"event_id": "e-42", "writeback": {"kind": "paid"}})
    headers = signed_headers(
        SECRETS[Destination.PMS],
        body,
        event_id="e-42",
        event_type="payment.captured",
        schema_version=1,
    )

    first = httpx.post(f"{pms_sim.url}/writebacks", content=body, headers=headers)
    second = httpx.post(f"{pms_sim.url}/writebacks", content=body, headers=headers)

    assert (first.status_code, first.json()["status"]) == (201, "recorded")
    assert (second.status_code, second.json()["status"]) == (200, "duplicate")
    assert len(pms_sim.writebacks) == 1
    assert len(pms_sim.received) == 2


# --- Only captured payments as paid; pending markers where declared -------------------------


def test_a_payment_not_yet_captured_produces_no_writeback_on_a_paid_only_pms(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor
):
    payment = create_payment(system_actor, practice, site, patient)
    services.payment_await_customer(payment_id=payment.id, actor=provider_actor)
    services.payment_authorise(payment_id=payment.id, actor=provider_actor)

    relay_due()

    assert _pms_rows(payment) == []
    assert pms_sim.received == []


def test_a_failed_payment_produces_no_pms_row(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor
):
    practice.pms_writeback_mode = PmsWritebackMode.PENDING_MARKER
    practice.save()
    payment = create_payment(system_actor, practice, site, patient)
    OutboxMessage.objects.filter(event_type="payment.pending").delete()  # marker tested below
    services.payment_fail(payment_id=payment.id, actor=provider_actor, code="declined", reason="x")

    relay_due()

    assert _pms_rows(payment) == []
    assert pms_sim.received == []
    payment.refresh_from_db()
    assert payment.pms_writeback_status == PmsWritebackStatus.NOT_DUE


def test_a_pms_declaring_a_pending_marker_gets_it_before_the_paid_writeback(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor
):
    practice.pms_writeback_mode = PmsWritebackMode.PENDING_MARKER
    practice.save()
    payment = create_payment(system_actor, practice, site, patient, amount="30.00")

    relay_due()
    services.payment_await_customer(payment_id=payment.id, actor=provider_actor)
    services.payment_capture(payment_id=payment.id, actor=provider_actor)
    relay_due()

    assert [w["writeback"]["kind"] for w in pms_sim.writebacks] == ["pending", "paid"]
    payment.refresh_from_db()
    assert payment.pms_writeback_status == PmsWritebackStatus.WRITTEN


def test_a_pending_marker_is_not_written_once_the_payment_failed(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor
):
    practice.pms_writeback_mode = PmsWritebackMode.PENDING_MARKER
    practice.save()
    payment = create_payment(system_actor, practice, site, patient)
    services.payment_fail(payment_id=payment.id, actor=provider_actor, code="declined", reason="x")

    relay_due()

    (marker,) = _pms_rows(payment)
    assert marker.status == Status.DISABLED
    assert "already failed" in marker.last_error
    assert pms_sim.received == []
    assert _fallback_tasks() == []


def test_a_paid_writeback_for_a_payment_that_is_not_captured_is_refused(
    relay_settings, pms_sim, practice, site, patient, system_actor
):
    payment = create_payment(system_actor, practice, site, patient)
    # A faulty producer: a "paid" writeback for a payment still initiated.
    row = enqueue(
        Destination.PMS, "payment.captured", practice, {"amount": "80.00"}, payment_id=payment.id
    )

    relay_due()

    row.refresh_from_db()
    assert row.status == Status.DISABLED
    assert "not captured" in row.last_error
    assert pms_sim.received == []
    assert _fallback_tasks() == []


# --- Fallback tasks --------------------------------------------------------------------------


def _assert_one_fallback(payment, row, reason_fragment):
    (task,) = _fallback_tasks()
    assert task.payment_id == payment.id
    assert task.payload["writeback_event_id"] == str(row.id)
    assert task.payload["writeback_event_type"] == "payment.captured"
    assert task.payload["invoice_ref"] == "INV-2001"
    assert task.payload["amount"] == "80.00"
    assert task.payload["writeback"] == row.payload  # the full detail
    assert reason_fragment in task.payload["detail"]
    (audit,) = _failed_audits(payment.id)
    assert audit.payload["fallback_task_id"] == str(task.id)
    assert reason_fragment in audit.payload["reason"]
    assert audit.actor_id == "outbox_relay"
    assert audit.amount == Decimal("80.00")
    payment.refresh_from_db()
    assert payment.pms_writeback_status == PmsWritebackStatus.FALLBACK
    return task


def test_a_pms_down_past_its_retries_becomes_a_fallback_task_and_an_audit_event(
    relay_settings, sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    pms_sim.mode = "down"
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)

    _relay_passes(4)

    (row,) = _pms_rows(payment)
    assert (row.status, row.attempts) == (Status.DEAD, 3)
    assert len(pms_sim.received) == 3
    task = _assert_one_fallback(payment, row, "failed after 3 attempts")
    assert str(task.id) in row.last_error
    # The fallback task itself is delivered to the Task Manager.
    (delivered_task,) = [r for r in sink.by_path("/task_manager")]
    assert delivered_task.event_id == str(task.id)
    assert delivered_task.document["payload"]["task_type"] == "pms_writeback_fallback"


def test_a_practice_whose_pms_has_no_writeback_gets_the_fallback_at_once(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor
):
    practice.pms_writeback_mode = PmsWritebackMode.UNSUPPORTED
    practice.save()
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)

    relay_due()

    (row,) = _pms_rows(payment)
    assert (row.status, row.attempts) == (Status.DISABLED, 0)
    assert pms_sim.received == []
    _assert_one_fallback(payment, row, "does not support writeback")


def test_a_pms_answering_501_gets_the_fallback_after_one_attempt(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor
):
    pms_sim.mode = "unsupported"
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)

    relay_due()

    (row,) = _pms_rows(payment)
    assert (row.status, row.attempts) == (Status.DISABLED, 1)
    _assert_one_fallback(payment, row, "does not support writeback")


def test_a_pms_rejecting_the_writeback_gets_the_fallback_without_retrying(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor
):
    pms_sim.mode = "reject"
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)

    relay_due()

    (row,) = _pms_rows(payment)
    assert (row.status, row.attempts) == (Status.DEAD, 1)
    _assert_one_fallback(payment, row, "HTTP 422")


def test_no_pms_endpoint_configured_means_fallback_not_silence(
    relay_settings, sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    relay_settings.OUTBOX_ENDPOINTS = endpoint_settings(sink.url, None)
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)

    relay_due()

    (row,) = _pms_rows(payment)
    assert row.status == Status.DISABLED
    assert "PMS_WRITEBACK_URL is not configured" in row.last_error
    _assert_one_fallback(payment, row, "PMS_WRITEBACK_URL")


def test_a_writeback_that_fell_back_to_a_manual_task_is_never_sent_again(
    relay_settings, pms_sim, practice, site, patient, system_actor, provider_actor, client
):
    """Staff may already have entered it from the task: a second, automatic entry would
    count the payment twice. Redelivery refuses it; the task is the way to finish it."""
    from django.urls import reverse

    from audit.actors import Actor
    from integrations.relay import outbox_redeliver
    from practices.roles import Role
    from tests.factories import make_staff

    pms_sim.mode = "reject"
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)
    relay_due()
    (row,) = _pms_rows(payment)
    (task,) = _fallback_tasks()
    finance_admin = make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)
    pms_sim.mode = "ok"

    queued = outbox_redeliver(message_ids=[row.id], actor=Actor.staff(finance_admin))
    client.force_login(finance_admin)
    answer = client.post(
        reverse("admin:integrations_outboxmessage_changelist"),
        {"action": "redeliver", "_selected_action": [str(row.id)]},
        follow=True,
    )
    relay_due()

    assert queued == 0
    page = answer.content.decode()
    assert "0 message(s) queued for redelivery." in page
    assert "1 PMS writeback(s) not redelivered" in page and "enter the payment twice" in page
    row.refresh_from_db()
    payment.refresh_from_db()
    assert row.status == Status.DEAD
    assert payment.pms_writeback_status == PmsWritebackStatus.FALLBACK
    assert pms_sim.writebacks == []
    assert _fallback_tasks() == [task]
    assert not AuditEvent.objects.filter(event_type=EventType.OUTBOX_REDELIVERED).exists()


def test_a_parked_pending_marker_without_a_task_can_still_be_redelivered(
    relay_settings, pms_sim, practice, site, patient, system_actor
):
    from audit.actors import Actor
    from integrations.relay import outbox_redeliver
    from practices.roles import Role
    from tests.factories import make_staff

    practice.pms_writeback_mode = PmsWritebackMode.PENDING_MARKER
    practice.save()
    pms_sim.mode = "reject"
    payment = create_payment(system_actor, practice, site, patient)
    relay_due()
    (marker,) = _pms_rows(payment)
    assert marker.status == Status.DEAD and _fallback_tasks() == []
    finance = Actor.staff(make_staff(Role.FINANCE_ADMIN, practice=practice))

    assert outbox_redeliver(message_ids=[marker.id], actor=finance) == 1


# --- GoCardless fee data ----------------------------------------------------------------------

FEES = {
    "currency": "GBP",
    "gocardless_fee": "0.45",
    "app_fee": "0.10",
    "tax": "0.09",
    "payout_id": "PO000123",
}


def _subscription_payment(practice, patient):
    """What the subscriptions work will write for a paid-out Direct Debit payment."""
    return enqueue(
        Destination.PMS,
        "subscription.payment.paid_out",
        practice,
        {
            "subscription_payment_id": "SP-1",
            "patient_id": str(patient.id),
            "billable_target": {"type": "patient_balance", "id": "BAL-7", "pms_invoice_ref": None},
            "amount": "25.00",
            "currency": "GBP",
            "payment_mandate_ref": "MD-0001",
            "fees": FEES,
        },
        dedupe_key="pms:subscription:SP-1",
    )


def test_gocardless_fees_travel_in_the_writeback(relay_settings, pms_sim, practice, patient):
    _subscription_payment(practice, patient)

    relay_due()

    (writeback,) = pms_sim.writebacks
    assert writeback["writeback"]["fees"] == FEES
    assert writeback["writeback"]["amount"] == "25.00"


def test_gocardless_fees_travel_in_the_fallback_task(relay_settings, pms_sim, practice, patient):
    practice.pms_writeback_mode = PmsWritebackMode.UNSUPPORTED
    practice.save()
    row = _subscription_payment(practice, patient)

    relay_due()

    (task,) = _fallback_tasks()
    assert task.payload["fees"] == FEES
    assert task.payload["writeback"]["payment_mandate_ref"] == "MD-0001"
    (audit,) = _failed_audits()
    assert audit.payload["fees"] == FEES
    assert audit.payload["fallback_task_id"] == str(task.id)
    assert audit.subject_id == str(row.id)
