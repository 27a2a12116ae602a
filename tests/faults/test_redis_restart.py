"""Redis dies mid-stream, taking every queued task message with it, and comes back empty.

Invariant: 0 lost, 0 doubled. Every provider webhook stored while Redis was up
or down is processed exactly once; every outbox row written before and during
the outage is delivered exactly once (each module and the PMS receive it in one
POST: a relay records every outcome it gets, so nothing is sent again) and
recorded once.
Nothing depends on a task message surviving: the rows wait in PostgreSQL, and
after the restart only beat publishes (nothing else is sent), so it is beat's
sweeps (every second here) that find the events and rows whose messages were
lost or never sent. Webhook requests during the outage are still
answered 200 (the event is stored; only the "process now" message fails).

A real Celery worker with beat embedded runs against the test database and a
redis-server of our own; this test process publishes to the same Redis.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest

from integrations.models import OutboxMessage, WebhookEvent
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from tests.faults.conftest import (
    assert_delivered,
    assert_once,
    endpoint_env,
    module_rows,
    pms_rows,
)
from tests.faults.processes import (
    app_env,
    celery_worker,
    publishing_to,
    redis_server,
    wait_until,
)
from tests.integrations.conftest import capture_payment
from tests.providers.conftest import CLIENT_SECRET, json_body, signed_callback

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

S = PaymentState
Status = OutboxMessage.Status
PER_PHASE = 4


def _presented(actor, practice, site, patient, n):
    payment = services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=f"INV-R-{n}",
        amount="60.00",
        method=PaymentMethod.ONLINE,
    )
    services.payment_await_customer(payment_id=payment.id, actor=actor)
    return payment


def _callback(client, payment) -> int:
    body = json_body(signed_callback(invoice_id=str(payment.id), amount=Decimal("60")))
    return client.post("/webhooks/dna/", data=body, content_type="application/json").status_code


def test_a_redis_restart_mid_stream_loses_no_webhook_and_no_outbox_row(
    client,
    settings,
    sink,
    pms_sim,
    fast_relay_env,
    practice,
    site,
    patient,
    reception_actor,
    system_actor,
    provider_actor,
):
    settings.DNA_CLIENT_SECRET = CLIENT_SECRET
    settings.OUTBOX_RELAY_ON_COMMIT = True
    sink.delay = 0.05  # a consumer a little slow, so a backlog is in flight when Redis dies
    presented = [
        _presented(reception_actor, practice, site, patient, n) for n in range(2 * PER_PHASE)
    ]
    captured = []

    def phase(index: int) -> list[int]:
        """Webhooks for this phase's payments, and as many payments captured directly."""
        answers = [_callback(client, p) for p in presented[index::2]]
        captured.extend(
            capture_payment(
                system_actor, provider_actor, practice, site, patient, target_id=f"D-{index}-{n}"
            )
            for n in range(PER_PHASE)
        )
        return answers

    with redis_server() as redis:
        env = app_env(redis_url=redis.url, **endpoint_env(sink.url, pms_sim.url), **fast_relay_env)
        with celery_worker(env, concurrency=2, beat=True) as worker, publishing_to(redis.url):
            answers = phase(0)  # Redis up
            wait_until(lambda: len(sink.stored) >= 3, timeout=30)
            redis.kill()  # mid-stream: queued and unacknowledged messages are gone
            in_flight = OutboxMessage.objects.filter(status=Status.PENDING).count()
            answers += phase(1)  # Redis down: rows and events are stored, messages fail
            time.sleep(1.0)
            redis.start()  # back on the same port, empty; from now on only beat publishes

            def settled() -> bool:
                return (
                    not OutboxMessage.objects.exclude(status=Status.DELIVERED).exists()
                    and not WebhookEvent.objects.exclude(status="processed").exists()
                    and not Payment.objects.exclude(state=S.CAPTURED).exists()
                )

            if not wait_until(settled, timeout=90, interval=0.25):
                pytest.fail(
                    "not everything was recovered: "
                    f"{Counter(OutboxMessage.objects.values_list('status', flat=True))}, "
                    f"{Counter(WebhookEvent.objects.values_list('status', flat=True))}\n"
                    + worker.output()
                )
            assert worker.alive()

    assert in_flight > 0, "Redis died with nothing in flight: the test proved nothing"
    assert answers == [200] * (2 * PER_PHASE)
    payments = [p.id for p in presented] + [p.id for p in captured]
    assert WebhookEvent.objects.count() == len(presented)
    assert set(WebhookEvent.objects.values_list("attempts", flat=True)) == {1}
    assert_once(payment_ids=payments, to_state=S.CAPTURED)
    assert len(pms_rows()) == len(payments)
    # Redis held only "do this now" hints: no relay lost an outcome, so nothing is sent twice.
    assert_delivered(sink, module_rows())
    assert_delivered(pms_sim, pms_rows())
    assert {r.signature_valid for r in sink.received} == {True}
