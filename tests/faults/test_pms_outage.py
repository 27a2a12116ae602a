"""The PMS goes away for a while (no answer, then 503 maintenance) and comes back, or does not.

Real processes: a Celery worker with beat embedded relays the outbox, on the
test database and a redis-server of our own; the PMS simulator and the module
sink answer over HTTP. Backoff and sweeps are shortened through the
environment (OUTBOX_BACKOFF_*, OUTBOX_SWEEP_SECONDS) so an outage spanning
several relay retries fits in seconds.

Invariants:

- Back before the attempts run out: every writeback is delivered exactly once
  (one accepted POST per event id: each refused attempt was recorded as a
  retry, so nothing is sent again after success), in order per payment (a
  refund after its payment); every payment ends `written`; the outage alone
  creates no fallback task and no `pms_writeback.failed` audit event. Meanwhile
  the other modules keep receiving their messages, each exactly once.
- Down past the attempts: each money writeback becomes one fallback task for
  the Task Manager (delivered once) and one `pms_writeback.failed` event, and
  is never sent to the PMS again once it is back: staff may already have
  entered it by hand. (tests/integrations/test_pms_writeback.py checks the
  same rule in-process, case by case.)
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from integrations.pms.services import FALLBACK_TASK_TYPE
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, PmsWritebackStatus
from tests.faults.conftest import (
    assert_delivered,
    assert_once,
    endpoint_env,
    module_rows,
    pms_rows,
)
from tests.faults.processes import app_env, celery_worker, publishing_to, redis_server, wait_until
from tests.integrations.conftest import capture_payment, create_payment

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

Status = OutboxMessage.Status
CARD, CASH, REFUNDED = 4, 2, 2
PMS = Destination.PMS


def _pending(destination_is_pms: bool) -> bool:
    rows = OutboxMessage.objects.filter(status=Status.PENDING)
    rows = rows.filter(destination=PMS) if destination_is_pms else rows.exclude(destination=PMS)
    return rows.exists()


def test_every_writeback_is_delivered_once_after_the_pms_comes_back(
    settings,
    sink,
    pms_sim,
    fast_relay_env,
    practice,
    site,
    patient,
    system_actor,
    provider_actor,
    reception_actor,
    manager_actor,
):
    settings.OUTBOX_RELAY_ON_COMMIT = True  # our commits ask the worker to relay at once
    pms_sim.mode = "drop"  # first the PMS does not answer at all

    def refusals() -> Counter:
        """PMS calls so far that the PMS did not take in, per writeback (no answer, or 503)."""
        return Counter(r.event_id for r in pms_sim.received if not r.accepted)

    with redis_server() as redis:
        env = app_env(
            redis_url=redis.url,
            **endpoint_env(sink.url, pms_sim.url),
            **{**fast_relay_env, "OUTBOX_SWEEP_SECONDS": "0.5"},
        )
        with celery_worker(env, concurrency=2, beat=True) as worker, publishing_to(redis.url):
            payments = [
                capture_payment(
                    system_actor, provider_actor, practice, site, patient, target_id=f"C-{n}"
                )
                for n in range(CARD)
            ]
            for n in range(CASH):
                cash = create_payment(
                    reception_actor,
                    practice,
                    site,
                    patient,
                    method=PaymentMethod.CASH,
                    target_id=f"K{n}",
                )
                services.tender_record_received(payment_id=cash.id, actor=reception_actor)
                payments.append(cash)
            refunded = [p.id for p in payments[CARD:][:REFUNDED]]
            for payment_id in refunded:
                services.refund_request(
                    payment_id=payment_id,
                    actor=manager_actor,
                    amount="15.00",
                    reason_code="billing_error",
                )
            paid_rows = {
                str(pk)
                for pk in OutboxMessage.objects.filter(destination=PMS)
                .exclude(event_type__startswith="refund.")
                .values_list("pk", flat=True)
            }
            assert wait_until(lambda: refusals().total() >= 3, timeout=30), worker.output()
            pms_sim.mode = "down"  # then it answers 503: in maintenance
            # The outage spans several relay passes: every writeback due is refused, backed
            # off and tried again, more than once.
            spanned = wait_until(
                lambda: all(refusals()[row] >= 2 for row in paid_rows), timeout=40, interval=0.2
            )
            assert spanned, f"{refusals()}\n{worker.output()}"
            assert wait_until(lambda: not _pending(destination_is_pms=False), timeout=30)
            during = {
                "pending": OutboxMessage.objects.filter(
                    destination=PMS, status=Status.PENDING
                ).count(),
                "taken_in": len(pms_sim.deliveries()),
                "refusals": refusals(),
                "answers": Counter(r.status for r in pms_sim.received),
            }
            pms_sim.mode = "ok"
            drained = wait_until(
                lambda: not _pending(destination_is_pms=True), timeout=45, interval=0.25
            )
            assert drained, (
                f"{Counter(OutboxMessage.objects.values_list('status', flat=True))}\n"
                + worker.output()
            )

    ids = [p.id for p in payments]
    # During the outage: every writeback waited and none was taken in; each paid writeback
    # was refused (no answer, then 503) several times, and no refund was sent before its
    # payment's writeback was taken in.
    assert (during["pending"], during["taken_in"]) == (CARD + CASH + REFUNDED, 0)
    assert set(during["refusals"]) == paid_rows
    assert set(during["answers"]) == {None, 503}
    assert OutboxMessage.objects.filter(destination=PMS).count() == CARD + CASH + REFUNDED
    # Every writeback taken in exactly once, in order per payment.
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert_delivered(pms_sim, pms_rows())
    taken_in = [r.document for r in pms_sim.received if r.accepted]
    for payment_id in refunded:
        kinds = [
            d["writeback"]["kind"]
            for d in taken_in
            if d["writeback"]["payment_ids"] == [str(payment_id)]
        ]
        assert kinds == ["paid", "refund"]
    assert set(
        Payment.objects.filter(id__in=ids).values_list("pms_writeback_status", flat=True)
    ) == {PmsWritebackStatus.WRITTEN}
    # Waiting out an outage within the retry budget is not a failure.
    assert not OutboxMessage.objects.filter(payload__task_type=FALLBACK_TASK_TYPE).exists()
    assert not AuditEvent.objects.filter(event_type=EventType.PMS_WRITEBACK_FAILED).exists()
    # Nothing doubled on our side or the modules' side.
    assert_once(payment_ids=ids, to_state=PaymentState.CAPTURED)
    assert_delivered(sink, module_rows())
    assert {r.signature_valid for r in sink.received} == {True}


def test_a_pms_down_past_the_attempts_gets_one_fallback_task_each_and_no_late_writeback(
    settings, sink, pms_sim, fast_relay_env, practice, site, patient, system_actor, provider_actor
):
    settings.OUTBOX_RELAY_ON_COMMIT = True
    pms_sim.mode = "down"
    attempts = 3
    with redis_server() as redis:
        env = app_env(
            redis_url=redis.url,
            **endpoint_env(sink.url, pms_sim.url),
            **{**fast_relay_env, "OUTBOX_MAX_ATTEMPTS": str(attempts)},
        )
        with celery_worker(env, concurrency=2, beat=True) as worker, publishing_to(redis.url):
            payments = [
                capture_payment(
                    system_actor, provider_actor, practice, site, patient, target_id=f"F-{n}"
                )
                for n in range(2)
            ]
            gave_up = wait_until(
                lambda: not OutboxMessage.objects.filter(status=Status.PENDING).exists(),
                timeout=45,
                interval=0.25,
            )
            assert gave_up, worker.output()
            pms_sim.mode = "ok"  # back, after the writebacks were handed to staff
            time.sleep(3)  # three sweeps: none may send a fallen-back writeback again

    ids = [p.id for p in payments]
    writebacks = OutboxMessage.objects.filter(destination=PMS)
    assert sorted(writebacks.values_list("status", "attempts")) == [(Status.DEAD, attempts)] * 2
    assert pms_sim.deliveries() == Counter()  # the PMS never took one in, before or after
    assert Counter(r.event_id for r in pms_sim.received) == dict.fromkeys(pms_rows(), attempts)
    tasks = Counter(
        row.payload["writeback_event_id"]
        for row in OutboxMessage.objects.filter(payload__task_type=FALLBACK_TASK_TYPE)
    )
    assert tasks == dict.fromkeys(pms_rows(), 1)
    failed = Counter(
        AuditEvent.objects.filter(event_type=EventType.PMS_WRITEBACK_FAILED).values_list(
            "payment_id", flat=True
        )
    )
    assert failed == dict.fromkeys(ids, 1)
    assert set(
        Payment.objects.filter(id__in=ids).values_list("pms_writeback_status", flat=True)
    ) == {PmsWritebackStatus.FALLBACK}
    assert_once(payment_ids=ids, to_state=PaymentState.CAPTURED)
    assert_delivered(sink, module_rows())  # the fallback tasks and the signals, once each
