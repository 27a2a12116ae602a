"""Celery workers killed with SIGKILL in the middle of a task.

Two ways a worker dies, two recovery paths:

- One pool process is killed (the OOM killer's way): with acks_late and
  reject_on_worker_lost the message goes back to the queue and another pool
  process runs it again. There is no beat here, so only that redelivery can
  finish the work.
- The whole worker is killed (the machine's way): its unacknowledged messages
  stay invisible in Redis for the visibility timeout (an hour), so they cannot
  help; a new worker's beat sweeps find the stored event and the leased outbox
  row in PostgreSQL.

Invariant in both: the effect happens once. The killed attempt's transaction
is rolled back (its database connection dies with it), the webhook event is
processed once (one record registered, one signal, attempts = 1), and a
delivery cut off mid-request is sent again and recorded once by its consumer.

The killed task is a GoCardless webhook whose API look-up hangs (the
simulator's timeout fault): the pool process is then inside the event's
transaction, holding its row lock, exactly where a crash hurts most.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import httpx
import pytest
from celery import current_app
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage, WebhookEvent
from subscriptions.models import SubscriptionPayment
from tests.faults.conftest import endpoint_env
from tests.faults.processes import (
    Worker,
    app_env,
    celery_worker,
    publishing_to,
    redis_server,
    wait_until,
)
from tests.integrations.conftest import capture_payment
from tests.subscriptions.conftest import TOKEN, post_events, publish, scenario, sim_requests

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

Status = OutboxMessage.Status


def _worker_env(redis_url, sink, pms_sim, gc_api, **extra) -> dict[str, str]:
    return app_env(
        redis_url=redis_url,
        GOCARDLESS_API_URL=gc_api,
        GOCARDLESS_ACCESS_TOKEN=TOKEN,
        **endpoint_env(sink.url, pms_sim.url),
        **extra,
    )


def _hanging_gocardless_webhook(client, gc_api, practice, patient) -> str:
    """A confirmed Direct Debit payment we have never seen; GoCardless's API will hang on it."""
    built = scenario("payment_confirmed", practice, patient, subscription_id="CP-KILL")
    publish(gc_api, built)
    payment_id = built.events[0]["links"]["payment"]
    fault = {"path_prefix": f"/payments/{payment_id}", "mode": "timeout", "seconds": 30}
    assert httpx.post(f"{gc_api}/sim/faults", json=fault, timeout=5).status_code == 201
    assert post_events(client, built.events).status_code == 200
    return payment_id


def _lookups(gc_api, payment_id) -> int:
    return sum(1 for r in sim_requests(gc_api) if r["path"] == f"/payments/{payment_id}")


def _idle_in_transaction() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _processed_once(payment_id: str) -> None:
    (event,) = WebhookEvent.objects.filter(provider="gocardless")
    assert (event.status, event.attempts) == ("processed", 1)
    record = SubscriptionPayment.objects.get(gocardless_payment_id=payment_id)
    registered = AuditEvent.objects.filter(
        event_type=EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED,
        subject_type="subscription_payment",
        subject_id=str(record.id),
        payload__change="registered",
    )
    assert registered.count() == 1
    assert (
        OutboxMessage.objects.filter(
            destination=Destination.FINANCIAL_INSIGHTS, event_type="subscription.payment.received"
        ).count()
        == 1
    )


def test_a_pool_process_killed_mid_task_is_redelivered_and_the_effect_happens_once(
    client, gc_api, sink, pms_sim, practice, patient
):
    with (
        redis_server() as redis,
        celery_worker(_worker_env(redis.url, sink, pms_sim, gc_api), concurrency=1) as worker,
        publishing_to(redis.url),
    ):
        payment_id = _hanging_gocardless_webhook(client, gc_api, practice, patient)
        assert wait_until(lambda: _lookups(gc_api, payment_id) == 1, timeout=30), worker.output()
        assert wait_until(_idle_in_transaction, timeout=10)  # inside the event's transaction
        (victim,) = worker.children()

        os.kill(victim, signal.SIGKILL)

        processed = wait_until(
            lambda: WebhookEvent.objects.filter(status="processed").exists(), timeout=45
        )
        assert processed, worker.output()
        assert worker.alive() and victim not in worker.children()

    assert _lookups(gc_api, payment_id) == 2  # the killed attempt, and the redelivered one
    _processed_once(payment_id)
    assert SubscriptionPayment.objects.count() == 1


def test_a_whole_worker_killed_mid_task_is_recovered_by_a_new_workers_sweeps(
    client, gc_api, sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    sink.delay = 2.0  # a delivery is in flight when the worker dies
    timing = {
        "OUTBOX_HTTP_TIMEOUT_SECONDS": "3",
        "OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS": "0.5",
        "OUTBOX_LEASE_SECONDS": "8",  # a claimed row is retried this long after the claim
        "OUTBOX_SWEEP_SECONDS": "1",
        "WEBHOOK_SWEEP_SECONDS": "1",
    }
    with redis_server() as redis, publishing_to(redis.url):
        env = _worker_env(redis.url, sink, pms_sim, gc_api, **timing)
        with celery_worker(env, concurrency=2) as doomed:
            card = capture_payment(system_actor, provider_actor, practice, site, patient)
            current_app.send_task("integrations.tasks.relay_outbox")
            payment_id = _hanging_gocardless_webhook(client, gc_api, practice, patient)
            leased = wait_until(
                lambda: OutboxMessage.objects.filter(
                    payment_id=card.id, next_attempt_at__gt=timezone.now()
                ).exists(),
                timeout=30,
            )
            assert leased and wait_until(lambda: _lookups(gc_api, payment_id), timeout=30)
            _kill(doomed)
            assert WebhookEvent.objects.get().status == "received"

        with celery_worker(env, concurrency=2, beat=True) as rescuer:
            settled = wait_until(
                lambda: (
                    not OutboxMessage.objects.exclude(status=Status.DELIVERED).exists()
                    and WebhookEvent.objects.filter(status="processed").exists()
                ),
                timeout=60,
                interval=0.25,
            )
            assert settled, rescuer.output()

    _processed_once(payment_id)
    rows = OutboxMessage.objects.all()
    module_rows = {str(r.id) for r in rows if r.destination != Destination.PMS}
    assert set(sink.stored) == module_rows  # each recorded once by its consumer
    resent = Counter(r.event_id for r in sink.received)
    assert max(resent.values()) == 2  # the delivery cut off by the kill was sent again
    assert [w["event_id"] for w in pms_sim.writebacks] == [
        str(r.id) for r in rows if r.destination == Destination.PMS
    ]


def _kill(worker: Worker) -> None:
    """SIGKILL the pool processes and the main process: nothing gets to clean up."""
    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
