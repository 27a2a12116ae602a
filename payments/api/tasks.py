"""Celery entry points for the API."""

from __future__ import annotations

from celery import shared_task

from payments.api.idempotency import idempotency_expire


@shared_task(name="payments.api.tasks.expire_idempotency_keys", ignore_result=True)
def expire_idempotency_keys() -> int:
    """Beat, hourly: Idempotency-Key records older than IDEMPOTENCY_KEY_TTL_HOURS go."""
    return idempotency_expire()
