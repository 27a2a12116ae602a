"""Prometheus metrics (§14 Observability), served at /metrics.

Counters are incremented after the transaction that caused them commits, so a
rolled-back change is never counted. Backlog gauges are read from PostgreSQL at
scrape time, so every web and worker process reports the same truth. With
several processes (gunicorn, Celery prefork), set PROMETHEUS_MULTIPROC_DIR to
an empty directory shared by them and the counters are summed across them.
"""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import REGISTRY, GaugeMetricFamily

PAYMENT_OUTCOMES = Counter(
    "primoro_payment_outcomes_total",
    "Payments reaching captured or failed, by method and site.",
    ["method", "site", "outcome"],
)
REFUNDS = Counter(
    "primoro_refunds_total", "Refunds completed, by method and site.", ["method", "site", "kind"]
)
VOIDS = Counter("primoro_voids_total", "Payments voided before capture.", ["method", "site"])
WEBHOOK_EVENTS = Counter(
    "primoro_webhook_events_total",
    "Provider webhook events: stored, duplicate (already stored), rejected (bad signature), "
    "or parked (processing given up on).",
    ["provider", "result"],
)


def _after_commit(increment) -> None:
    transaction.on_commit(increment)


def payment_outcome(payment, outcome: str) -> None:
    _after_commit(
        lambda: PAYMENT_OUTCOMES.labels(payment.method, str(payment.site_id), outcome).inc()
    )


def refund_completed(payment, *, full: bool) -> None:
    kind = "full" if full else "partial"
    _after_commit(lambda: REFUNDS.labels(payment.method, str(payment.site_id), kind).inc())


def payment_voided(payment) -> None:
    _after_commit(lambda: VOIDS.labels(payment.method, str(payment.site_id)).inc())


def webhook_event(provider: str, result: str) -> None:
    WEBHOOK_EVENTS.labels(provider, result).inc()


class DatabaseCollector:
    """Backlogs read from PostgreSQL at scrape time: outbox rows waiting and webhook events unprocessed."""

    def collect(self):
        from integrations.models import OutboxMessage, WebhookEvent

        backlog = GaugeMetricFamily(
            "primoro_outbox_backlog",
            "Outbox rows not delivered, by destination and status.",
            labels=["destination", "status"],
        )
        oldest = GaugeMetricFamily(
            "primoro_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row, by destination.",
            labels=["destination"],
        )
        now = timezone.now()
        waiting = (
            OutboxMessage.objects.exclude(status=OutboxMessage.Status.DELIVERED)
            .values("destination", "status")
            .annotate(n=Count("pk"), first=Min("occurred_at"))
        )
        for row in waiting:
            backlog.add_metric([row["destination"], row["status"]], row["n"])
            if row["status"] == OutboxMessage.Status.PENDING:
                oldest.add_metric([row["destination"]], (now - row["first"]).total_seconds())
        unprocessed = GaugeMetricFamily(
            "primoro_webhook_events_unprocessed",
            "Stored provider events not yet processed or unmatched.",
            labels=["provider", "status"],
        )
        for row in (
            WebhookEvent.objects.exclude(
                status__in=[WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED]
            )
            .values("provider", "status")
            .annotate(n=Count("pk"))
        ):
            unprocessed.add_metric([row["provider"], row["status"]], row["n"])
        yield backlog
        yield oldest
        yield unprocessed


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(DatabaseCollector())
        return registry
    return REGISTRY


_database_collector_registered = False


@require_GET
def metrics_view(request):
    """Prometheus exposition. When METRICS_TOKEN is set, a matching bearer token is required."""
    global _database_collector_registered
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("unauthorised\n", status=401, content_type="text/plain")
    registry = _registry()
    if registry is REGISTRY and not _database_collector_registered:
        REGISTRY.register(DatabaseCollector())
        _database_collector_registered = True
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
