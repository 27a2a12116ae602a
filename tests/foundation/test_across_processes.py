"""Metrics and request ids across real processes: gunicorn takes a webhook, a Celery worker applies it.

The app runs as in production: gunicorn with the project's config (two sync
workers) and a prefork Celery worker, on the test database, a redis-server of
our own and one temporary PROMETHEUS_MULTIPROC_DIR. A signed DNA callback
posted to gunicorn is stored there and processed in the worker, which captures
the payment and relays its outbox rows to the PMS simulator and the module sink.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest

from audit.models import AuditEvent
from integrations.models import OutboxMessage
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from tests.faults.conftest import endpoint_env
from tests.faults.processes import app_env, celery_worker, gunicorn, redis_server, wait_until
from tests.integrations.conftest import pms_sim, sink  # noqa: F401
from tests.providers.conftest import CLIENT_SECRET, json_body, signed_callback

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "across-processes-metrics-token-0123456789"


@dataclass
class Run:
    payment: Payment
    request_id: str
    answer: httpx.Response
    scrapes: list[str]  # /metrics, several times: any gunicorn worker may answer
    web_log: str
    worker_log: str


def _lines(output: str) -> list[dict]:
    """The JSON log lines of a process's output (other lines, e.g. Celery's banner, skipped)."""
    found = []
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                found.append(value)
    return found


def _sample(metrics: str, name: str, **labels) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _through_the_stack(sink, pms_sim, reception_actor, practice, site, patient) -> Run:  # noqa: F811
    payment = services.payment_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-TRACE",
        amount="60.00",
        method=PaymentMethod.ONLINE,
    )
    services.payment_await_customer(payment_id=payment.id, actor=reception_actor)
    request_id = f"trace-{uuid.uuid4().hex}"
    with (
        tempfile.TemporaryDirectory(prefix="prometheus-") as metrics_dir,
        tempfile.TemporaryFile() as web_log,
        redis_server() as redis,
    ):
        env = app_env(
            redis_url=redis.url,
            DNA_CLIENT_SECRET=CLIENT_SECRET,
            PROMETHEUS_MULTIPROC_DIR=metrics_dir,
            METRICS_TOKEN=METRICS_TOKEN,
            LOG_LEVEL="INFO",
            LOG_FORMAT="json",
            **endpoint_env(sink.url, pms_sim.url),
        )
        with (
            gunicorn(env, workers=2, log=web_log) as base,
            celery_worker(env, concurrency=1) as worker,
            httpx.Client(base_url=base, timeout=30) as http,
        ):
            body = json_body(signed_callback(invoice_id=str(payment.id), amount=Decimal("60")))
            answer = http.post(
                "/webhooks/dna/",
                content=body,
                headers={"Content-Type": "application/json", "X-Request-ID": request_id},
            )

            def settled() -> bool:
                return (
                    Payment.objects.get(pk=payment.pk).state == PaymentState.CAPTURED
                    and OutboxMessage.objects.exists()
                    and not OutboxMessage.objects.exclude(
                        status=OutboxMessage.Status.DELIVERED
                    ).exists()
                )

            assert wait_until(settled, timeout=60, interval=0.25), worker.output()
            scrapes = [
                http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                for _ in range(4)
            ]
            worker.log.seek(0)
            worker_log = worker.log.read().decode(errors="replace")
        web_log.seek(0)
        assert {scrape.status_code for scrape in scrapes} == {200}
        return Run(
            payment=payment,
            request_id=request_id,
            answer=answer,
            scrapes=[scrape.text for scrape in scrapes],
            web_log=web_log.read().decode(errors="replace"),
            worker_log=worker_log,
        )


def test_gunicorn_metrics_show_what_the_worker_counted(
    sink,  # noqa: F811
    pms_sim,  # noqa: F811
    reception_actor,
    practice,
    site,
    patient,
):
    run = _through_the_stack(sink, pms_sim, reception_actor, practice, site, patient)

    assert run.answer.status_code == 200
    for metrics in run.scrapes:  # whichever gunicorn worker answered
        _assert_every_process_counted(metrics, site)
    assert len(pms_sim.writebacks) == 1


def _assert_every_process_counted(metrics: str, site) -> None:
    # Counted in the web process that stored the event.
    assert _sample(metrics, "primoro_webhook_events_total", provider="dna", result="stored") == 1
    # Counted in the Celery worker's pool process: the capture, the deliveries, their latency.
    captured = {"method": "online", "site": str(site.id), "outcome": "captured"}
    assert _sample(metrics, "primoro_payment_outcomes_total", **captured) == 1
    assert (
        _sample(
            metrics,
            "primoro_outbox_delivery_outcomes_total",
            destination="pms",
            outcome="delivered",
        )
        == 1
    )
    assert (
        _sample(
            metrics,
            "primoro_outbox_emission_latency_seconds_count",
            destination="pms",
            event_type="payment.captured",
        )
        == 1
    )


def test_a_request_id_reaches_the_worker_log_line_of_the_payment_it_changed(
    sink,  # noqa: F811
    pms_sim,  # noqa: F811
    reception_actor,
    practice,
    site,
    patient,
):
    run = _through_the_stack(sink, pms_sim, reception_actor, practice, site, patient)
    web, worker = _lines(run.web_log), _lines(run.worker_log)

    payment_id = str(run.payment.id)
    assert run.answer.headers["X-Request-ID"] == run.request_id
    stored = [line for line in web if line.get("event") == "webhook_stored"]
    assert [line["request_id"] for line in stored] == [run.request_id]
    # The capture happened in the worker, under the web request's id, naming the payment.
    (captured,) = [
        line
        for line in worker
        if line.get("event") == "audit_event"
        and line.get("payment_id") == payment_id
        and line.get("to_state") == PaymentState.CAPTURED
    ]
    assert captured["request_id"] == run.request_id
    assert captured["task"] == "integrations.tasks.process_webhook_event"
    assert not any(line.get("event") == "audit_event" for line in web)  # not applied in web
    stored_event = AuditEvent.objects.get(payment_id=run.payment.id, to_state="captured")
    assert stored_event.request_id == run.request_id
