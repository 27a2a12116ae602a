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
processed once (one record registered, one signal, attempts = 1). Outbox rows
written after the kill are delivered in exactly one POST each; a delivery cut
off mid-request (its outcome never recorded) is sent again, once, and recorded
once by its consumer: delivery is at least once, consumers de-duplicate.

The killed task is a GoCardless webhook whose API look-up hangs (the
simulator's timeout fault): the pool process is then inside the event's
transaction, holding its row lock, exactly where a crash hurts most.
"""

from __future__ import annotations

import os
import signal

import pytest
from celery import current_app
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage, WebhookEvent
from subscriptions.models import SubscriptionPayment
from tests.faults.conftest import (
    assert_delivered,
    endpoint_env,
    gocardless_env,
    gocardless_lookups,
    hanging_gocardless_webhook,
    module_rows,
    pms_rows,
)
from tests.faults.processes import (
    Worker,
    app_env,
    backends_in_transaction,
    celery_worker,
    publishing_to,
    redis_server,
    wait_until,
)
from tests.integrations.conftest import capture_payment

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

Status = OutboxMessage.Status


def _worker_env(redis_url, sink, pms_sim, gc_api, **extra) -> dict[str, str]:
    return app_env(
        redis_url=redis_url,
        **gocardless_env(gc_api),
        **endpoint_env(sink.url, pms_sim.url),
        **extra,
    )


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
        payment_id = hanging_gocardless_webhook(client, gc_api, practice, patient, seconds=30)
        assert wait_until(lambda: gocardless_lookups(gc_api, payment_id) == 1, timeout=30), (
            worker.output()
        )
        assert wait_until(backends_in_transaction, timeout=10)  # inside the event's transaction
        (victim,) = worker.children()

        os.kill(victim, signal.SIGKILL)

        processed = wait_until(
            lambda: (
                WebhookEvent.objects.filter(status="processed").exists()
                and not OutboxMessage.objects.exclude(status=Status.DELIVERED).exists()
            ),
            timeout=45,
        )
        assert processed, worker.output()
        assert worker.alive() and victim not in worker.children()

    # Asked twice: by the killed attempt, and by the redelivered one.
    assert gocardless_lookups(gc_api, payment_id) == 2
    _processed_once(payment_id)
    assert SubscriptionPayment.objects.count() == 1
    # The kill came before any outbox row existed: each is delivered in exactly one POST.
    assert_delivered(sink, module_rows())
    assert_delivered(pms_sim, pms_rows())


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
            payment_id = hanging_gocardless_webhook(client, gc_api, practice, patient, seconds=30)
            leased = wait_until(
                lambda: OutboxMessage.objects.filter(
                    payment_id=card.id, next_attempt_at__gt=timezone.now()
                ).exists(),
                timeout=30,
            )
            assert leased and wait_until(lambda: gocardless_lookups(gc_api, payment_id), timeout=30)
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
    # At least once: the delivery in flight when the worker died had reached its consumer,
    # but its outcome was never recorded, so it was sent again once its lease ran out. Only
    # rows some relay had posted and not recorded can come twice, and each relay posts one
    # row at a time: at most one repeat per pool process of the killed worker.
    raw = assert_delivered(sink, module_rows(), redelivered=2)
    raw += assert_delivered(pms_sim, pms_rows(), redelivered=2)
    assert max(raw.values()) == 2  # the delivery cut off by the kill was sent again
    assert sum(n - 1 for n in raw.values()) <= 2


def _kill(worker: Worker) -> None:
    """SIGKILL the pool processes and the main process: nothing gets to clean up."""
    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
