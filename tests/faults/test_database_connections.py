"""PostgreSQL drops the app's connections (pg_terminate_backend) again and again mid-run.

Invariant: the next request or task reconnects by itself and nothing is lost.
Every webhook posted after a drop is answered 200 (gunicorn's persistent
connection is found dead by the health check, CONN_HEALTH_CHECKS, and
replaced before the view runs); every payment is captured exactly once and
every outbox row is delivered and recorded once, even when a drop lands in
the middle of a worker's task (beat's sweeps retry what that task left: a
stored event at once, a claimed outbox row once its lease has run out).

The app runs as in production: gunicorn (one sync worker, so its one
connection is reused and really is the one that was dropped) and a Celery
worker with beat, both on the test database and a redis-server of our own.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import httpx
import pytest

from audit.models import AuditEvent
from integrations.models import Destination, OutboxMessage, WebhookEvent
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from tests.faults.conftest import endpoint_env
from tests.faults.processes import (
    app_env,
    celery_worker,
    gunicorn,
    redis_server,
    terminate_backends,
    wait_until,
)
from tests.providers.conftest import CLIENT_SECRET, json_body, signed_callback

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

S = PaymentState
PAYMENTS = 9


def test_dropped_database_connections_are_replaced_and_nothing_is_lost(
    sink, pms_sim, fast_relay_env, practice, site, patient, reception_actor
):
    payments = []
    for n in range(PAYMENTS):
        payment = services.payment_create(
            actor=reception_actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.INVOICE,
            target_id=f"INV-DB-{n}",
            amount="60.00",
            method=PaymentMethod.ONLINE,
        )
        services.payment_await_customer(payment_id=payment.id, actor=reception_actor)
        payments.append(payment)
    answers, dropped = [], 0
    with redis_server() as redis:
        env = app_env(
            redis_url=redis.url,
            DNA_CLIENT_SECRET=CLIENT_SECRET,
            DB_CONN_MAX_AGE="600",
            **endpoint_env(sink.url, pms_sim.url),
            **fast_relay_env,
        )
        with (
            gunicorn(env, workers=1) as base,
            celery_worker(env, concurrency=1, beat=True) as worker,
            httpx.Client(base_url=base, timeout=30) as http,
        ):
            for payment in payments:  # a drop before every request, while the worker is busy
                dropped += terminate_backends()
                body = json_body(signed_callback(invoice_id=str(payment.id), amount=Decimal("60")))
                answer = http.post(
                    "/webhooks/dna/", content=body, headers={"Content-Type": "application/json"}
                )
                answers.append(answer.status_code)
            dropped += terminate_backends()
            ready = http.get("/readyz")

            def settled() -> bool:
                return (
                    not Payment.objects.exclude(state=S.CAPTURED).exists()
                    and not WebhookEvent.objects.exclude(status="processed").exists()
                    and not OutboxMessage.objects.exclude(
                        status=OutboxMessage.Status.DELIVERED
                    ).exists()
                )

            assert wait_until(settled, timeout=60, interval=0.25), worker.output()

    assert dropped >= PAYMENTS  # the web worker's and the Celery workers' connections
    assert answers == [200] * PAYMENTS
    assert ready.status_code == 200
    ids = [p.id for p in payments]
    assert WebhookEvent.objects.count() == PAYMENTS
    assert Counter(
        AuditEvent.objects.filter(payment_id__in=ids, to_state=S.CAPTURED).values_list(
            "payment_id", flat=True
        )
    ) == dict.fromkeys(ids, 1)
    rows = OutboxMessage.objects.all()
    assert set(sink.stored) == {str(r.id) for r in rows if r.destination != Destination.PMS}
    assert Counter(w["event_id"] for w in pms_sim.writebacks) == {
        str(r.id): 1 for r in rows if r.destination == Destination.PMS
    }
