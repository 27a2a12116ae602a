"""The shared webhook pipeline: each provider event is stored once and processed once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from integrations.models import WebhookEvent
from integrations.webhooks import (
    HandlerResult,
    RetryableWebhookError,
    register_handler,
    webhook_event_process,
    webhook_event_store,
)

CALLS: list[int] = []


def _handler(event: WebhookEvent) -> HandlerResult:
    """A provider handler through the pipeline's own extension point (no patching)."""
    CALLS.append(event.pk)
    if event.body.get("retry"):
        raise RetryableWebhookError("provider look-up failed")
    if event.body.get("unknown"):
        return HandlerResult(status=WebhookEvent.Status.UNMATCHED, note="no such payment")
    return HandlerResult(status=WebhookEvent.Status.PROCESSED)


@pytest.fixture(autouse=True)
def pipeline_handler():
    register_handler("pipeline-test", _handler)
    CALLS.clear()


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


def test_retryable_failure_is_retried_then_surfaced(db):
    event, _ = webhook_event_store(provider="pipeline-test", event_id="ev-4", body={"retry": True})
    assert webhook_event_process(event.pk) == WebhookEvent.Status.FAILED
    for _ in range(10):
        webhook_event_process(event.pk)
    event.refresh_from_db()
    assert event.status == WebhookEvent.Status.UNMATCHED
    assert event.attempts == 8 and "gave up" in event.last_error


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
