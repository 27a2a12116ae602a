"""Celery entry points for payments: thin wrappers over payments.services."""

from __future__ import annotations

from celery import shared_task

from payments import overdue, services


@shared_task(name="payments.tasks.expire_approvals", ignore_result=True)
def expire_approvals() -> int:
    return services.approvals_expire()


@shared_task(name="payments.tasks.process_overdue_balances", ignore_result=True)
def process_overdue_balances() -> dict:
    """Beat, hourly: due instalments started, overdue balances reminded and escalated."""
    return overdue.overdue_process().as_dict()
