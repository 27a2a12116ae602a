"""Celery entry points for the outbox: thin wrappers over `integrations.relay`.

`relay_outbox` is published after a commit that wrote outbox rows
(`integrations.outbox.request_relay`); `sweep_outbox` runs from beat every few
seconds, so a lost Redis message, or a worker that died, only delays delivery:
the rows wait in PostgreSQL. Both are safe to run concurrently (SKIP LOCKED).
"""

from __future__ import annotations

import structlog
from celery import shared_task
from django.db.models import Count, Min
from django.utils import timezone

from integrations.models import OutboxMessage
from integrations.relay import relay_until_idle

log = structlog.get_logger("integrations.tasks")


@shared_task(name="integrations.tasks.relay_outbox", ignore_result=True)
def relay_outbox() -> dict:
    """Deliver what is due now, until nothing is due or the time budget is spent."""
    stats = relay_until_idle()
    if stats.more_due:
        relay_outbox.apply_async()  # keep going in a fresh task, within the time limits
    return stats.as_dict()


@shared_task(name="integrations.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict:
    """Beat's safety net: relay anything due, and log the backlog for dashboards and alerts."""
    stats = relay_until_idle()
    now = timezone.now()
    pending = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).aggregate(
        count=Count("pk"), oldest=Min("occurred_at")
    )
    parked = dict(
        OutboxMessage.objects.filter(
            status__in=[OutboxMessage.Status.DEAD, OutboxMessage.Status.DISABLED]
        )
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    log.info(
        "outbox_sweep",
        **stats.as_dict(),
        pending=pending["count"],
        oldest_pending_age_s=(
            round((now - pending["oldest"]).total_seconds(), 1) if pending["oldest"] else None
        ),
        dead_letters=parked.get(OutboxMessage.Status.DEAD, 0),
        parked_disabled=parked.get(OutboxMessage.Status.DISABLED, 0),
    )
    return stats.as_dict()


@shared_task(name="integrations.tasks.process_webhook_event", ignore_result=True)
def process_webhook_event(pk: int) -> str:
    """Thin: process one stored provider event (integrations.webhooks)."""
    from integrations.webhooks import webhook_event_process

    return webhook_event_process(pk)


@shared_task(name="integrations.tasks.sweep_webhook_events", ignore_result=True)
def sweep_webhook_events() -> int:
    """Beat's safety net for stored events whose task message was lost or that are due again."""
    from integrations.webhooks import webhook_events_sweep

    return webhook_events_sweep()
