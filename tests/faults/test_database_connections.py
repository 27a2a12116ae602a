"""PostgreSQL drops the app's connections (pg_terminate_backend): between requests, and mid-work.

Invariant: the next request or task reconnects by itself; nothing is lost and
no state change is doubled.

- Again and again mid-run: every webhook posted after a drop is answered 200
  (gunicorn's persistent connection is found dead by the health check,
  CONN_HEALTH_CHECKS, and replaced before the view runs); every payment is
  captured exactly once and every outbox row is delivered and recorded once,
  even when a drop lands in the middle of a worker's task (beat's sweeps retry
  what that task left: a stored event at once, a claimed outbox row once its
  lease has run out).
- Inside a transaction holding a row lock: PostgreSQL rolls the transaction
  back, so the interrupted attempt leaves nothing, not even its attempt count;
  beat's sweep does the work again, once.
- While a delivery is in flight: the consumer took the message in, but the
  relay cannot record that; the row is sent again once its lease runs out, and
  the consumer's de-duplication keeps it once (delivery is at least once).

The app runs as in production: gunicorn (one sync worker, so its one
connection is reused and really is the one that was dropped) and a Celery
worker with beat, both on the test database and a redis-server of our own.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage, WebhookEvent
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, PmsWritebackStatus, TargetType
from subscriptions.models import SubscriptionPayment
from tests.faults.conftest import (
    assert_delivered,
    assert_once,
    endpoint_env,
    gocardless_env,
    gocardless_lookups,
    hanging_gocardless_webhook,
    module_rows,
    pms_rows,
)
from tests.faults.processes import (
    app_env,
    backends_in_transaction,
    celery_worker,
    gunicorn,
    publishing_to,
    redis_server,
    row_locked,
    terminate_backend,
    terminate_backends,
    wait_until,
)
from tests.integrations.conftest import capture_payment
from tests.providers.conftest import CLIENT_SECRET, json_body, signed_callback

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

S = PaymentState
Status = OutboxMessage.Status
PAYMENTS = 9


def _all_done() -> bool:
    return (
        OutboxMessage.objects.exists()
        and not WebhookEvent.objects.exclude(status="processed").exists()
        and not OutboxMessage.objects.exclude(status=Status.DELIVERED).exists()
    )


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
    answers, dropped, rounds = [], 0, 0
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
                rounds += 1
                body = json_body(signed_callback(invoice_id=str(payment.id), amount=Decimal("60")))
                answer = http.post(
                    "/webhooks/dna/", content=body, headers={"Content-Type": "application/json"}
                )
                answers.append(answer.status_code)
            dropped += terminate_backends()
            rounds += 1
            ready = http.get("/readyz")

            def settled() -> bool:
                return _all_done() and not Payment.objects.exclude(state=S.CAPTURED).exists()

            assert wait_until(settled, timeout=60, interval=0.25), worker.output()

    assert dropped >= PAYMENTS  # the web worker's and the Celery workers' connections
    assert answers == [200] * PAYMENTS
    assert ready.status_code == 200
    ids = [p.id for p in payments]
    assert WebhookEvent.objects.count() == PAYMENTS
    assert_once(payment_ids=ids, to_state=S.CAPTURED)
    # At least once: a drop that lands while the worker's one pool process is posting a row
    # leaves that delivery unrecorded, and it is sent again after its lease. The relay posts
    # one row at a time and stops at the first failed query, so each round of drops can
    # cost at most one repeat, across both consumers.
    raw = assert_delivered(sink, module_rows(), redelivered=rounds)
    raw += assert_delivered(pms_sim, pms_rows(), redelivered=rounds)
    assert sum(n - 1 for n in raw.values()) <= rounds


def test_a_connection_cut_inside_a_webhook_transaction_is_rolled_back_and_redone_once(
    client, gc_api, sink, pms_sim, fast_relay_env, practice, patient
):
    """Deterministic: the handler waits on GoCardless's API inside the event's transaction.

    The stored GoCardless event is processed by the worker, which asks the API
    simulator about the payment while it holds the event's row lock; the
    simulator does not answer for a few seconds. Meanwhile the test sees the
    worker's connection idle in a transaction and the row locked, and
    terminates exactly that backend. When the API answers, the task finds its
    connection gone and fails; beat's sweep processes the event again on a new
    connection.
    """
    with redis_server() as redis:
        env = app_env(
            redis_url=redis.url,
            **gocardless_env(gc_api),
            **endpoint_env(sink.url, pms_sim.url),
            **fast_relay_env,
        )
        with celery_worker(env, concurrency=1, beat=True) as worker, publishing_to(redis.url):
            payment_id = hanging_gocardless_webhook(client, gc_api, practice, patient, seconds=3)
            event = WebhookEvent.objects.get()
            asked = wait_until(lambda: gocardless_lookups(gc_api, payment_id) == 1, timeout=30)
            assert asked, worker.output()
            inside = wait_until(backends_in_transaction, timeout=10)
            assert inside and len(inside) == 1, inside
            locked = row_locked(WebhookEvent, event.pk)

            cut = terminate_backend(inside[0])

            assert wait_until(lambda: not row_locked(WebhookEvent, event.pk), timeout=5)
            done = wait_until(_all_done, timeout=45, interval=0.25)
            assert done, worker.output()
            assert worker.alive()

    assert locked and cut
    # Asked twice: by the interrupted attempt, and by the sweep that did the work.
    assert gocardless_lookups(gc_api, payment_id) == 2
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("processed", 1)  # the cut attempt left nothing
    (record,) = SubscriptionPayment.objects.filter(gocardless_payment_id=payment_id)
    assert (
        AuditEvent.objects.filter(
            event_type=EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED,
            subject_type="subscription_payment",
            subject_id=str(record.id),
            payload__change="registered",
        ).count()
        == 1
    )
    signals = OutboxMessage.objects.filter(
        destination=Destination.FINANCIAL_INSIGHTS, event_type="subscription.payment.received"
    )
    assert signals.count() == 1
    # The rolled-back attempt wrote no outbox row; the redone one's rows go out once each.
    assert_delivered(sink, module_rows())
    assert_delivered(pms_sim, pms_rows())


def test_a_connection_cut_while_a_writeback_is_in_flight_is_sent_again_and_recorded_once(
    settings, sink, pms_sim, fast_relay_env, practice, site, patient, system_actor, provider_actor
):
    """Deterministic: the PMS holds its answer until the worker's connection is gone.

    The relay claims the rows (leasing them), then posts the writeback with no
    transaction open; the PMS takes the request and holds it. The test
    terminates the worker's connection, then lets the PMS record it and answer
    201: the relay cannot record the outcome, so the row stays leased and is
    sent again when the lease runs out. The PMS answers the repeat "duplicate".
    """
    settings.OUTBOX_RELAY_ON_COMMIT = True
    pms_sim.hold()
    with redis_server() as redis:
        env = app_env(redis_url=redis.url, **endpoint_env(sink.url, pms_sim.url), **fast_relay_env)
        with celery_worker(env, concurrency=1, beat=True) as worker, publishing_to(redis.url):
            payment = capture_payment(system_actor, provider_actor, practice, site, patient)
            (writeback,) = pms_rows()
            in_flight = wait_until(lambda: pms_sim.held == 1, timeout=30)
            assert in_flight, worker.output()

            dropped = terminate_backends()
            pms_sim.release()

            done = wait_until(_all_done, timeout=45, interval=0.25)
            assert done, worker.output()
            assert worker.alive()

    assert dropped >= 1
    raw = assert_delivered(pms_sim, [writeback], redelivered=1)
    assert raw[writeback] == 2  # taken in, then acknowledged as a repeat
    assert [r.duplicate for r in pms_sim.received] == [False, True]
    row = OutboxMessage.objects.get(pk=writeback)
    assert (row.status, row.attempts) == (Status.DELIVERED, 1)  # the lost outcome never counted
    payment.refresh_from_db()
    assert payment.pms_writeback_status == PmsWritebackStatus.WRITTEN
    assert_once(payment_ids=[payment.id], to_state=S.CAPTURED)
    assert not AuditEvent.objects.filter(event_type=EventType.PMS_WRITEBACK_FAILED).exists()
    # The rows the cut task had claimed but not yet posted went out once, after the lease.
    assert_delivered(sink, module_rows())
