"""Delivering outbox rows: every destination, signatures, envelope, latency, retries, dead letters."""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from integrations.models import Destination, OutboxMessage
from integrations.outbox import outbox_enqueue
from integrations.receivers import MessageSink
from integrations.relay import (
    backoff_delay,
    emission_latency_by_event_type,
    relay_due,
    relay_until_idle,
)
from integrations.signing import verify
from payments import services
from payments.models import PaymentMethod
from tests.integrations.conftest import (
    MODULES,
    SECRETS,
    capture_payment,
    create_payment,
    endpoint_settings,
    enqueue,
    module_path,
)

pytestmark = pytest.mark.django_db

Status = OutboxMessage.Status


def _rows(**filters):
    return list(OutboxMessage.objects.filter(**filters).order_by("occurred_at"))


# --- Delivery to each destination ----------------------------------------------------


def test_a_capture_is_delivered_to_each_of_its_destinations_signed_with_their_secrets(
    relay_settings, sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    payment = capture_payment(
        system_actor,
        provider_actor,
        practice,
        site,
        patient,
        amount="120.00",
        rewards_credit=services.RewardsCredit(amount=Decimal("20.00"), reference="RW-77"),
    )
    rows = _rows(payment_id=payment.id)
    assert {r.destination for r in rows} == {
        Destination.FINANCIAL_INSIGHTS,
        Destination.REWARDS_MANAGER,
        Destination.COMMUNICATION_HUB,
        Destination.PMS,
    }

    stats = relay_due()

    assert (stats.claimed, stats.delivered) == (4, 4)
    assert {r.status for r in _rows(payment_id=payment.id)} == {Status.DELIVERED}
    for row in rows:
        if row.destination == Destination.PMS:
            continue
        (received,) = sink.by_path(module_path(row.destination))
        assert received.event_id == str(row.id)
        assert received.signature_valid is True
        # Signed with this module's secret, not any other module's.
        signature = received.headers["x-primoro-signature"]
        verify(SECRETS[row.destination], signature, received.body, event_id=str(row.id))
        other = next(d for d in MODULES if d != row.destination)
        with pytest.raises(ValueError, match="does not match"):
            verify(SECRETS[other], signature, received.body, event_id=str(row.id))
    (writeback,) = pms_sim.writebacks
    assert writeback["event_id"] == str(next(r.id for r in rows if r.destination == "pms"))
    assert writeback["writeback"]["kind"] == "paid"
    assert writeback["writeback"]["amount"] == "100.00"  # captured: the amount less the credit


def test_the_envelope_and_headers_follow_the_contract(
    relay_settings, sink, practice, site, patient, system_actor, provider_actor
):
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)
    row = OutboxMessage.objects.get(
        payment_id=payment.id, destination=Destination.FINANCIAL_INSIGHTS
    )

    relay_due()

    (received,) = sink.by_path("/financial_insights")
    assert json.loads(received.body) == {
        "event_id": str(row.id),
        "type": "payment.captured",
        "schema_version": 1,
        "practice_id": str(practice.id),
        "occurred_at": row.occurred_at.isoformat(),
        "payload": row.payload,
    }
    assert received.headers["x-primoro-event-id"] == str(row.id)
    assert received.headers["x-primoro-event-type"] == "payment.captured"
    assert received.headers["x-primoro-schema-version"] == "1"
    assert received.headers["x-primoro-delivery-attempt"] == "1"
    assert received.headers["content-type"] == "application/json"


def test_one_cause_writes_one_message_and_its_transaction_carries_on(practice):
    def task(title):
        return outbox_enqueue(
            destination=Destination.TASK_MANAGER,
            event_type="task.create",
            practice_id=practice.id,
            payload={"task_type": "payment_exception", "title": title},
            dedupe_key="task:once",
        )

    with transaction.atomic():
        first = task("first")
        again = task("again")
        OutboxMessage.objects.count()  # the transaction is still usable after the duplicate

    assert first is not None and again is None
    stored = OutboxMessage.objects.get()
    assert stored.pk == first.pk and stored.payload["title"] == "first"
    assert first._state.adding is False  # a saved instance, as .save() would leave it


def test_a_message_type_outside_the_catalog_is_refused_at_the_write(practice):
    """Every destination's real messages are delivered in test_outbound_catalog.py."""
    with pytest.raises(ValueError, match=r"not in integrations\.catalog\.OUTBOUND_EVENTS"):
        enqueue(Destination.TELEPHONY, "recording.pause", practice, {})
    with pytest.raises(ValueError, match="task_type 'made_up'"):
        enqueue(Destination.TASK_MANAGER, "task.create", practice, {"task_type": "made_up"})
    assert not OutboxMessage.objects.exists()


def test_a_failed_payment_sends_its_task_and_nothing_to_the_pms(
    relay_settings, sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    payment = create_payment(system_actor, practice, site, patient)
    services.payment_fail(
        payment_id=payment.id, actor=provider_actor, code="declined", reason="Card declined"
    )

    relay_due()

    (task,) = sink.by_path("/task_manager")
    assert task.document["payload"]["task_type"] == "payment_failed"
    assert pms_sim.received == []
    assert not OutboxMessage.objects.filter(destination=Destination.PMS).exists()


# --- Latency -----------------------------------------------------------------------------


def test_emission_latency_is_recorded_per_event_type(
    relay_settings, sink, practice, site, patient, system_actor, provider_actor
):
    labels = {"event_type": "receipt.requested", "destination": "communication_hub"}
    name = "primoro_outbox_emission_latency_seconds_count"
    before = REGISTRY.get_sample_value(name, labels) or 0
    since = timezone.now()
    capture_payment(system_actor, provider_actor, practice, site, patient)
    capture_payment(system_actor, provider_actor, practice, site, patient, target_id="INV-2")

    relay_due()

    assert REGISTRY.get_sample_value(name, labels) == before + 2
    summary = emission_latency_by_event_type(since=since)
    assert summary["receipt.requested"]["count"] == 2
    assert summary["payment.captured"]["count"] == 4  # Financial Insights and the PMS, twice
    assert 0 <= summary["receipt.requested"]["p50"] <= summary["receipt.requested"]["max"] < 30
    row = OutboxMessage.objects.filter(event_type="receipt.requested").first()
    assert row.delivered_at >= row.occurred_at


# --- Disabled destinations ------------------------------------------------------------------


def test_a_destination_without_an_endpoint_is_disabled_visibly_and_redeliverable(
    relay_settings, sink, practice, site, patient, system_actor, provider_actor, caplog
):
    endpoints = endpoint_settings(sink.url, None)
    endpoints[Destination.COMMUNICATION_HUB] = {"url": "", "secret": ""}
    relay_settings.OUTBOX_ENDPOINTS = endpoints
    payment = capture_payment(system_actor, provider_actor, practice, site, patient)

    relay_due()

    receipt = OutboxMessage.objects.get(payment_id=payment.id, destination="communication_hub")
    assert receipt.status == Status.DISABLED
    assert receipt.attempts == 0
    assert "MODULE_COMMUNICATION_HUB_URL is not configured" in receipt.last_error
    assert sink.by_path("/communication_hub") == []
    assert any("outbox_destination_disabled" in str(r.msg) for r in caplog.records)
    # Financial Insights, which is configured, was delivered in the same pass.
    assert (
        OutboxMessage.objects.get(payment_id=payment.id, destination="financial_insights").status
        == Status.DELIVERED
    )


def test_an_endpoint_without_a_secret_is_disabled_rather_than_sent_unsigned(
    relay_settings, sink, practice
):
    endpoints = endpoint_settings(sink.url, None)
    endpoints[Destination.INVENTORY]["secret"] = ""
    relay_settings.OUTBOX_ENDPOINTS = endpoints
    row = enqueue(Destination.INVENTORY, "supplier_payment.executed", practice, {})

    relay_due()

    row.refresh_from_db()
    assert row.status == Status.DISABLED
    assert "MODULE_INVENTORY_SECRET" in row.last_error
    assert sink.received == []


# --- Retries, backoff and dead letters -----------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_full_jitter_and_a_floor():
    rng = random.Random(20261123)
    base, cap = 10.0, 900.0
    for attempts in range(1, 12):
        ceiling = min(cap, base * 2**attempts)
        delays = [backoff_delay(attempts, base=base, cap=cap, rng=rng) for _ in range(400)]
        assert all(base <= d <= ceiling for d in delays)
        # Jitter: the draws spread over the range rather than sitting on one value.
        assert max(delays) - min(delays) > 0.5 * (ceiling - base)
    assert backoff_delay(50, base=base, cap=cap, rng=rng) <= cap


def test_a_sink_error_schedules_a_retry_within_the_backoff_bounds(relay_settings, sink, practice):
    sink.mode = "down"
    row = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 1})
    before = timezone.now()

    stats = relay_due()

    row.refresh_from_db()
    assert (stats.retried, row.status, row.attempts) == (1, Status.PENDING, 1)
    assert "HTTP 503" in row.last_error
    base, cap = 0.05, 0.2
    assert before + timedelta(seconds=base) <= row.next_attempt_at
    assert row.next_attempt_at <= timezone.now() + timedelta(seconds=min(cap, base * 2))
    assert relay_due().claimed == 0  # not due again before its time


def _relay_until_dead(row, *, passes=6):
    for _ in range(passes):
        relay_due()
        row.refresh_from_db()
        if row.status != Status.PENDING:
            return row
        time.sleep(0.25)
    return row


def test_a_row_is_dead_lettered_after_the_maximum_attempts(relay_settings, sink, practice):
    sink.mode = "down"
    row = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 1})

    _relay_until_dead(row)

    assert (row.status, row.attempts) == (Status.DEAD, 3)
    assert row.last_error.startswith("Dead after 3 attempts: HTTP 503")
    assert len(sink.received) == 3
    time.sleep(0.25)
    assert relay_due().claimed == 0


def test_an_unreachable_sink_is_retried_like_a_server_error(relay_settings, sink, practice):
    sink.stop()
    row = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 1})

    _relay_until_dead(row)

    assert (row.status, row.attempts) == (Status.DEAD, 3)
    assert "Connection failed: ConnectError" in row.last_error


@pytest.mark.parametrize(
    ("status", "final_status", "attempts"),
    [
        ("400", Status.DEAD, 1),
        ("404", Status.DEAD, 1),
        ("422", Status.DEAD, 1),
        ("408", Status.DEAD, 3),
        ("429", Status.DEAD, 3),
        ("500", Status.DEAD, 3),
    ],
)
def test_a_4xx_is_dead_at_once_but_408_429_and_5xx_are_retried(
    relay_settings, sink, practice, status, final_status, attempts
):
    sink.mode = status
    row = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 1})

    _relay_until_dead(row)

    assert (row.status, row.attempts, len(sink.received)) == (final_status, attempts, attempts)
    assert f"HTTP {status}" in row.last_error


def test_a_receiver_refusing_the_signature_dead_letters_without_retrying(
    relay_settings, sink, practice
):
    endpoints = endpoint_settings(sink.url, None)
    endpoints[Destination.FINANCIAL_INSIGHTS]["secret"] = "a-secret-the-receiver-does-not-know"
    relay_settings.OUTBOX_ENDPOINTS = endpoints
    row = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 1})

    relay_due()

    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.DEAD, 1)
    assert "HTTP 401" in row.last_error
    (received,) = sink.received
    assert received.signature_valid is False
    assert sink.stored == {}


def test_relay_until_idle_drains_several_batches(relay_settings, sink, practice):
    rows = [
        enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": n})
        for n in range(7)
    ]

    stats = relay_until_idle(batch_size=3, time_budget=30)

    assert (stats.claimed, stats.delivered, stats.more_due) == (7, 7, False)
    assert set(sink.stored) == {str(r.id) for r in rows}


def test_a_relay_task_run_delivers_what_is_due(relay_settings, sink, practice):
    from integrations.tasks import relay_outbox, sweep_outbox

    first = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 1})
    assert relay_outbox.apply().get()["delivered"] == 1
    second = enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": 2})
    assert sweep_outbox.apply().get()["delivered"] == 1

    assert set(sink.stored) == {str(first.id), str(second.id)}
    assert OutboxMessage.objects.filter(status=Status.DELIVERED).count() == 2


def test_cash_tenders_are_delivered_like_any_other(
    relay_settings, sink, pms_sim, practice, site, patient, reception_actor
):
    payment = create_payment(reception_actor, practice, site, patient, method=PaymentMethod.CASH)
    services.tender_record_received(payment_id=payment.id, actor=reception_actor)

    relay_due()

    assert {r.status for r in _rows(payment_id=payment.id)} == {Status.DELIVERED}
    assert [w["writeback"]["kind"] for w in pms_sim.writebacks] == ["paid"]


def test_a_failing_destination_does_not_hold_up_the_others(relay_settings, sink, practice):
    dead_end = MessageSink()
    dead_end.start()
    dead_end.stop()  # a port nobody listens on
    endpoints = endpoint_settings(sink.url, None)
    endpoints[Destination.FINANCIAL_INSIGHTS]["url"] = f"{dead_end.url}/financial_insights"
    relay_settings.OUTBOX_ENDPOINTS = endpoints
    signals = [
        enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": n})
        for n in range(3)
    ]
    receipt = enqueue(Destination.COMMUNICATION_HUB, "receipt.requested", practice, {"n": 9})

    stats = relay_due()

    assert (stats.retried, stats.deferred, stats.delivered) == (1, 2, 1)
    assert list(sink.stored) == [str(receipt.id)]
    attempts = sorted(
        OutboxMessage.objects.filter(pk__in=[s.id for s in signals]).values_list(
            "attempts", flat=True
        )
    )
    assert attempts == [0, 0, 1]  # deferred rows keep their attempts


def test_rows_not_reached_before_the_deadline_are_released_for_the_next_pass(
    relay_settings, sink, practice
):
    rows = [
        enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": n})
        for n in range(3)
    ]

    stats = relay_due(deadline=time.monotonic())

    assert (stats.claimed, stats.released, stats.delivered, stats.more_due) == (3, 3, 0, True)
    assert sink.received == []
    assert relay_due().delivered == 3
    assert set(sink.stored) == {str(r.id) for r in rows}
