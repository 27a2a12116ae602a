"""The shared webhook pipeline: each provider event is stored once and processed once.

Failures are retried with backoff and finally parked (with a Task Manager task).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from integrations.models import Destination, OutboxMessage, WebhookEvent
from integrations.webhooks import (
    PARKED_TASK_TYPE,
    HandlerResult,
    RetryableWebhookError,
    register_handler,
    webhook_event_process,
    webhook_event_store,
    webhook_events_due,
    webhook_events_sweep,
)

CALLS: list[int] = []
Status = WebhookEvent.Status


def _handler(event: WebhookEvent) -> HandlerResult:
    """A provider handler through the pipeline's own extension point (no patching)."""
    CALLS.append(event.pk)
    if event.body.get("slow"):
        time.sleep(event.body["slow"])
    if event.body.get("out_of_time"):
        raise SoftTimeLimitExceeded()
    if event.body.get("retry"):
        raise RetryableWebhookError("provider look-up failed")
    if event.body.get("broken"):
        raise ValueError("a handler fault")
    if event.body.get("unknown"):
        return HandlerResult(status=WebhookEvent.Status.UNMATCHED, note="no such payment")
    return HandlerResult(status=WebhookEvent.Status.PROCESSED)


def _practice_for(event: WebhookEvent):
    return event.body.get("practice")


@pytest.fixture(autouse=True)
def pipeline_handler(settings):
    register_handler("pipeline-test", _handler, practice_for=_practice_for)
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 60.0
    settings.WEBHOOK_BACKOFF_CAP_SECONDS = 6 * 3600.0
    settings.WEBHOOK_RETRY_WINDOW_SECONDS = 24 * 3600
    settings.WEBHOOK_MAX_ERROR_ATTEMPTS = 3
    CALLS.clear()


def _tasks():
    return OutboxMessage.objects.filter(
        destination=Destination.TASK_MANAGER, payload__task_type=PARKED_TASK_TYPE
    )


def test_duplicate_delivery_is_stored_once(db):
    first, created = webhook_event_store(provider="pipeline-test", event_id="ev-1", body={"n": 1})
    again, created_again = webhook_event_store(
        provider="pipeline-test", event_id="ev-1", body={"n": 1}
    )
    assert created and not created_again and again is None
    assert WebhookEvent.objects.filter(provider="pipeline-test").count() == 1
    assert first.status == WebhookEvent.Status.RECEIVED


def test_processing_happens_once_even_if_asked_twice(db):
    event, _ = webhook_event_store(provider="pipeline-test", event_id="ev-2", body={})
    assert webhook_event_process(event.pk) == WebhookEvent.Status.PROCESSED
    assert webhook_event_process(event.pk) == WebhookEvent.Status.PROCESSED
    assert [event.pk] == CALLS
    event.refresh_from_db()
    assert event.processed_at is not None and event.attempts == 1


def test_unknown_payment_is_kept_as_unmatched(db):
    event, _ = webhook_event_store(
        provider="pipeline-test", event_id="ev-3", body={"unknown": True}
    )
    webhook_event_process(event.pk)
    event.refresh_from_db()
    assert event.status == WebhookEvent.Status.UNMATCHED and event.last_error == "no such payment"


def test_a_provider_outage_is_retried_with_a_growing_jittered_backoff(db):
    event, _ = webhook_event_store(provider="pipeline-test", event_id="ev-4", body={"retry": True})
    now = event.received_at
    delays = []
    for attempt in range(1, 15):
        assert webhook_event_process(event.pk, now=now) == Status.FAILED
        event.refresh_from_db()
        delay = (event.next_attempt_at - now).total_seconds()
        assert 60.0 <= delay <= min(6 * 3600.0, 60.0 * 2 ** (attempt - 1))
        assert event.pk not in webhook_events_due(now=now)
        assert event.pk in webhook_events_due(now=event.next_attempt_at)
        delays.append(delay)
        now = event.next_attempt_at
    assert event.attempts == 14 and event.last_error == "provider look-up failed"
    assert max(delays) > 3600  # the retries reach hours apart, not seconds
    assert not _tasks().exists()


def test_an_outage_longer_than_the_window_parks_the_event_with_a_task(db, practice):
    event, _ = webhook_event_store(
        provider="pipeline-test",
        event_id="ev-4b",
        body={"retry": True, "practice": str(practice.id)},
        resource_ref="PM123",
    )
    webhook_event_process(event.pk, now=event.received_at + timedelta(hours=23))

    assert webhook_event_process(event.pk, now=event.received_at + timedelta(hours=24)) == (
        Status.PARKED
    )
    event.refresh_from_db()
    assert event.attempts == 2 and event.next_attempt_at is None
    assert event.last_error.startswith("Gave up after 2 attempt(s) over 24.0 h")
    assert event.practice_id == practice.id
    assert event.pk not in webhook_events_due(now=event.received_at + timedelta(days=30))
    [task] = _tasks()
    assert task.practice_id == practice.id
    assert task.payload["event_id"] == "ev-4b" and task.payload["resource_ref"] == "PM123"
    assert task.payload["attempts"] == 2
    assert webhook_event_process(event.pk) == Status.PARKED  # parked stays parked
    assert _tasks().count() == 1


def test_an_unexpected_error_is_recorded_not_raised_and_parked_after_the_limit(db, practice):
    event, _ = webhook_event_store(
        provider="pipeline-test",
        event_id="ev-6",
        body={"broken": True, "practice": str(practice.id)},
    )

    assert webhook_event_process(event.pk) == Status.FAILED
    event.refresh_from_db()
    assert event.attempts == 1 and event.last_error == "ValueError: a handler fault"
    assert event.next_attempt_at > event.received_at
    webhook_event_process(event.pk)
    assert webhook_event_process(event.pk) == Status.PARKED
    event.refresh_from_db()
    assert event.attempts == 3 and "ValueError: a handler fault" in event.last_error
    assert _tasks().get().practice_id == practice.id


def test_a_parked_event_with_no_known_practice_writes_no_task(db):
    event, _ = webhook_event_store(provider="pipeline-test", event_id="ev-7", body={"broken": 1})
    for _ in range(3):
        webhook_event_process(event.pk)

    event.refresh_from_db()
    assert event.status == Status.PARKED and event.practice_id is None
    assert not OutboxMessage.objects.exists()


def test_the_sweep_goes_past_a_broken_event(db):
    broken, _ = webhook_event_store(provider="pipeline-test", event_id="ev-8", body={"broken": 1})
    fine, _ = webhook_event_store(provider="pipeline-test", event_id="ev-9", body={})

    assert webhook_events_sweep() == 2

    broken.refresh_from_db()
    fine.refresh_from_db()
    assert (broken.status, broken.attempts) == (Status.FAILED, 1)
    assert fine.status == Status.PROCESSED
    assert webhook_events_sweep() == 0  # the broken one waits for its next attempt


def test_a_sweep_stops_taking_events_when_its_time_is_up(db, settings):
    settings.WEBHOOK_SWEEP_TIME_BUDGET_SECONDS = 0.2
    slow = [
        webhook_event_store(provider="pipeline-test", event_id=f"ev-s{n}", body={"slow": 0.3})[0]
        for n in range(3)
    ]

    assert webhook_events_sweep() == 1  # the first one took longer than the whole budget

    statuses = sorted(
        WebhookEvent.objects.filter(pk__in=[e.pk for e in slow]).values_list("status", flat=True)
    )
    assert statuses == [Status.PROCESSED, Status.RECEIVED, Status.RECEIVED]
    settings.WEBHOOK_SWEEP_TIME_BUDGET_SECONDS = 60.0
    assert webhook_events_sweep() == 2  # the next sweep goes on where it stopped
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {Status.PROCESSED}


def test_a_worker_out_of_time_leaves_the_event_due_with_no_attempt_counted(db):
    event, _ = webhook_event_store(
        provider="pipeline-test", event_id="ev-t", body={"out_of_time": True}
    )

    with pytest.raises(SoftTimeLimitExceeded):
        webhook_event_process(event.pk)

    event.refresh_from_db()
    assert (event.status, event.attempts, event.last_error) == (Status.RECEIVED, 0, "")
    assert event.pk in webhook_events_due()


@pytest.mark.django_db(transaction=True)
def test_concurrent_processing_runs_the_handler_once():
    event, _ = webhook_event_store(provider="pipeline-test", event_id="ev-5", body={})
    barrier = threading.Barrier(6)

    def work():
        barrier.wait()
        try:
            webhook_event_process(event.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [event.pk] == CALLS
    event.refresh_from_db()
    assert event.status == WebhookEvent.Status.PROCESSED
