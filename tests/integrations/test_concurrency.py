"""Relays in parallel never deliver a row twice (SELECT ... FOR UPDATE SKIP LOCKED plus a lease).

Each thread has its own database connection, so these are concurrent
transactions against PostgreSQL; the rows are committed (transactional tests).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection, transaction

from integrations.models import Destination, OutboxMessage
from integrations.relay import relay_due
from tests.integrations.conftest import enqueue

pytestmark = pytest.mark.django_db(transaction=True)

Status = OutboxMessage.Status


def _rows(practice, count):
    return [
        enqueue(Destination.FINANCIAL_INSIGHTS, "payment.captured", practice, {"n": n})
        for n in range(count)
    ]


def test_two_relays_running_together_deliver_each_row_once(relay_settings, sink, practice):
    rows = _rows(practice, 40)
    sink.delay = 0.01
    barrier = threading.Barrier(2)
    claimed = Counter()

    def relay(name):
        barrier.wait()
        try:
            while True:
                stats = relay_due(batch_size=4)
                if stats.claimed == 0:
                    return
                claimed[name] += stats.claimed
        finally:
            connection.close()

    threads = [threading.Thread(target=relay, args=(f"relay-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    per_event = Counter(r.event_id for r in sink.received)
    assert set(per_event) == {str(r.id) for r in rows}
    assert set(per_event.values()) == {1}  # not even a de-duplicated repeat
    assert sum(claimed.values()) == 40
    assert OutboxMessage.objects.filter(status=Status.DELIVERED, attempts=1).count() == 40


def test_rows_locked_by_another_relay_are_skipped_not_waited_for(relay_settings, sink, practice):
    rows = _rows(practice, 6)
    held = {r.id for r in rows[:3]}
    locked = threading.Event()
    release = threading.Event()

    def hold_locks():
        try:
            with transaction.atomic():
                list(OutboxMessage.objects.select_for_update().filter(pk__in=held))
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_locks)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        stats = relay_due()
        assert stats.claimed == 3
        assert set(sink.stored) == {str(r.id) for r in rows[3:]}
    finally:
        release.set()
        holder.join(timeout=30)

    assert relay_due().claimed == 3
    assert set(sink.stored) == {str(r.id) for r in rows}


def test_a_leased_row_is_not_claimed_again_until_its_lease_expires(relay_settings, practice):
    from integrations.relay import _claim

    _rows(practice, 2)

    first, lease_until = _claim(10)
    second, _ = _claim(10)

    assert len(first) == 2
    assert second == []
    assert set(OutboxMessage.objects.values_list("next_attempt_at", flat=True)) == {lease_until}
