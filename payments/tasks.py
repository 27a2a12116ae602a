"""Celery entry points for payments: thin wrappers over payments.services."""

from __future__ import annotations

from celery import shared_task

from payments import services


@shared_task(name="payments.tasks.expire_approvals", ignore_result=True)
def expire_approvals() -> int:
    return services.approvals_expire()
