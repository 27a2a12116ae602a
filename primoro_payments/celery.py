"""The Celery app: explicit queues, reliable defaults for money work, request ids.

Defaults live in settings (CELERY_ namespace): late acks, redelivery when a
worker is lost, one message prefetched at a time, JSON only, time limits.
Tasks are routed to the webhooks, outbox, writeback or default queue by the
module they live in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import structlog
from celery import Celery, signals
from kombu import Queue
from kombu import pools as kombu_pools

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "primoro_payments.settings")

app = Celery("primoro_payments")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("webhooks", "outbox", "writeback", "default")]
app.conf.task_routes = {
    "integrations.tasks.process_webhook_event": {"queue": "webhooks"},
    "integrations.tasks.sweep_webhook_events": {"queue": "webhooks"},
    "integrations.tasks.relay_outbox*": {"queue": "outbox"},
    "integrations.tasks.sweep_outbox": {"queue": "outbox"},
    "integrations.tasks.deliver_*": {"queue": "outbox"},
    "integrations.tasks.pms_*": {"queue": "writeback"},
    # DNA provider calls, the janitor and settlement reconciliation (integrations/dna/tasks.py).
    "integrations.dna.tasks.*": {"queue": "default"},
}
app.autodiscover_tasks()


@signals.before_task_publish.connect
def _carry_request_id(headers=None, **_kwargs):
    """Put the current request id on every task message we publish."""
    from primoro_payments.logging import current_request_id

    request_id = current_request_id()
    if headers is not None and request_id and "request_id" not in headers:
        headers["request_id"] = request_id


@signals.task_prerun.connect
def _bind_request_id(task=None, task_id=None, **_kwargs):
    from primoro_payments.logging import clean_request_id

    structlog.contextvars.clear_contextvars()
    request_id = getattr(task.request, "request_id", None) if task else None
    structlog.contextvars.bind_contextvars(
        request_id=clean_request_id(request_id), task_id=task_id, task=task.name if task else None
    )


@signals.task_postrun.connect
def _unbind_request_id(**_kwargs):
    structlog.contextvars.clear_contextvars()


@signals.setup_logging.connect
def _keep_our_logging(**_kwargs):
    """Celery must not replace the structlog configuration done by settings."""


@contextlib.contextmanager
def publishing_to(broker_url: str, *, eager: bool = False) -> Iterator[None]:
    """Within the block this process queues real task messages on `broker_url`; then as before.

    For the processes that drive the app against a broker of their own (fault tests,
    benchmarks). kombu keeps connection and producer pools in process-wide registries,
    so they are emptied on the way in and out: nothing publishes to a stopped server.
    """
    saved = (app.conf.broker_url, app.conf.task_always_eager)

    def forget_connections() -> None:
        kombu_pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    forget_connections()
    app.conf.broker_url, app.conf.task_always_eager = broker_url, eager
    try:
        yield
    finally:
        forget_connections()
        app.conf.broker_url, app.conf.task_always_eager = saved
