"""A consumer that crashes mid-stream and comes back, or holds its answers: what arrives, and how often."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from integrations.models import Destination, OutboxMessage
from integrations.receivers import MessageSink
from integrations.relay import relay_due
from integrations.signing import signed_headers
from tests.integrations.conftest import capture_payment

pytestmark = pytest.mark.django_db

Status = OutboxMessage.Status


def test_sink_stopped_mid_stream_then_restarted_gets_every_row_exactly_once(
    relay_settings, sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    relay_settings.OUTBOX_MAX_ATTEMPTS = 10
    for n in range(6):
        capture_payment(system_actor, provider_actor, practice, site, patient, target_id=f"INV-{n}")
    module_rows = set(
        OutboxMessage.objects.exclude(destination=Destination.PMS).values_list("id", flat=True)
    )
    assert len(module_rows) == 12  # a Financial Signal and a receipt per payment

    # The consumer commits its 5th message, then dies before answering; the
    # rest of this pass meets a consumer that answers nothing.
    sink.crash_after(5)
    first = relay_due()
    assert first.claimed == 18
    assert len(sink.stored) == 5
    # Now it is stopped outright: connection refused.
    sink.stop()
    time.sleep(0.25)
    second = relay_due()
    # The 7 never stored, and the 5th whose answer was lost: one call per destination
    # finds it down, and the rest of that destination's rows wait without a call.
    assert (second.delivered, second.retried, second.deferred) == (0, 2, 6)

    # Restarted on the same port with its store intact.
    sink.mode = "ok"
    sink.crash_after(10_000)
    sink.start()
    deadline = time.monotonic() + 20
    while OutboxMessage.objects.filter(status=Status.PENDING).exists():
        assert time.monotonic() < deadline, "the relay did not drain the outbox"
        time.sleep(0.1)
        relay_due()

    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert {str(i) for i in module_rows} == set(sink.stored)  # each row, once, after de-duplication
    duplicates = [r for r in sink.received if r.duplicate]
    assert len(duplicates) == 1  # the message whose answer was lost came twice
    # Taken in: that one twice (stored, then acknowledged as a repeat), every other once;
    # the requests met while it was down are attempts, not deliveries.
    (crashed,) = [r for r in sink.received if r.accepted and r.status is None]
    assert sink.deliveries() == {**dict.fromkeys(sink.stored, 1), crashed.event_id: 2}
    assert len(sink.received) > sum(sink.deliveries().values())
    assert all(r.signature_valid for r in sink.received)
    assert len(pms_sim.writebacks) == 6


def test_a_held_consumer_answers_nothing_until_released_then_stores_the_message_once():
    secret = "held-sink-secret-0123456789"
    body = b'{"n": 1}'
    headers = signed_headers(secret, body, event_id="evt-held", event_type="t", schema_version=1)
    answers = []
    with MessageSink(secret=secret) as consumer:
        consumer.hold()
        sender = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{consumer.url}/m", content=body, headers=headers, timeout=10)
            )
        )
        sender.start()
        deadline = time.monotonic() + 5
        while consumer.held < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        held = (consumer.held, list(consumer.received), answers[:])
        consumer.release()
        sender.join(timeout=10)
        repeat = httpx.post(f"{consumer.url}/m", content=body, headers=headers, timeout=10)

    assert held == (1, [], [])  # in flight: not answered, not recorded
    assert [a.status_code for a in answers] == [200]
    assert repeat.json()["status"] == "duplicate"
    assert [(r.status, r.accepted, r.duplicate) for r in consumer.received] == [
        (200, True, False),
        (200, True, True),
    ]
    assert consumer.deliveries() == {"evt-held": 2}
    assert list(consumer.stored) == ["evt-held"]
