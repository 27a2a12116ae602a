"""Provider webhook → PMS writeback and Financial Signal delivered, at a sustained payment rate.

Run: `make bench BENCH_ARGS=emission` or `python -m benchmarks bench_emission`.

What runs, all on this machine: gunicorn (2 sync workers, as `make run`)
serving the project in production mode on a fresh bench database; Celery as
docs/runbook.md recommends, one worker on the `webhooks` queue (2 processes,
beat embedded) and one on `outbox,writeback,default` (2 processes); a
redis-server of its own; a signed `MessageSink` standing in for every platform
module and the PMS simulator, both over HTTP in this process (so the
consumers, like the load generator, share the machine's two cores).

For each rate in BENCH_EMISSION_RATES (default "50,25" payments per second),
rate x BENCH_EMISSION_SECONDS (default 20) online payments are presented to DNA
first (setup); then DNA's signed "charged" callbacks are posted at that rate by
an open-loop generator to `POST /webhooks/dna/`: verified and stored,
processed by a worker (the capture, its audit events and its outbox rows in
one transaction), and the rows relayed. For every payment it reports, from the
database's own clocks:

- webhook stored → processed: WebhookEvent.processed_at - received_at (the
  task queue and the processing);
- written → delivered: OutboxMessage.delivered_at - occurred_at, the figure
  the relay's `primoro_outbox_emission_latency_seconds` histogram exports
  (occurred_at is set as the row is written, inside the capture's
  transaction, so this includes the rest of that transaction and its commit);
- webhook → delivered: delivered_at - WebhookEvent.received_at, the whole
  path from DNA's request to the consumer's acknowledgement;

for the PMS writeback and the Financial Signal, as p50 / p95 / p99.
Baseline: the machine's floor for "a committed row is seen by another
process": a raw PostgreSQL INSERT committed on one connection and SELECTed on
another, at the same rate and during the same load. Target (TARGETS.md):
p99 < 1 s at 50 payments/s. Figures are printed, never asserted.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from decimal import Decimal

import psycopg

from audit.actors import Actor
from benchmarks.common import (
    bench_database,
    bench_practice,
    celery_worker,
    conninfo,
    gunicorn,
    pcts,
    percentile,
    post_at_rate,
    print_table,
    private_redis,
    production_env,
    raw_post,
)
from integrations.destinations import ENV_PREFIX
from integrations.models import Destination, OutboxMessage, WebhookEvent
from integrations.pms.simulator import serve_in_thread as serve_pms
from integrations.receivers import MessageSink
from integrations.simulators import signing
from integrations.simulators.base import dump_json
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from practices.models import Patient, Practice, Site
from primoro_payments.celery import publishing_to

SINK_SECRET = "bench-emission-module-secret-0123456789"
PMS_SECRET = "bench-emission-pms-secret-0123456789"


def _world() -> tuple[Practice, Site, Patient, Actor]:
    world = bench_practice("Bench emission", username="bench-emission")
    return world.practice, world.site, world.patient, Actor.staff(world.user)


def _presented(count: int) -> list[Payment]:
    practice, site, patient, actor = _world()
    payments = []
    for n in range(count):
        payment = services.payment_create(
            actor=actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.INVOICE,
            target_id=f"INV-{n}",
            amount="60.00",
            method=PaymentMethod.ONLINE,
        )
        services.payment_await_customer(payment_id=payment.id, actor=actor)
        payments.append(payment)
    return payments


def _callback(payment: Payment, secret: str) -> bytes:
    """DNA's signed success callback for a charged (settled) transaction."""
    transaction_id = str(uuid.uuid4())  # DNA's transaction ids are UUIDs
    body = {
        "id": transaction_id,
        "invoiceId": str(payment.id),
        "amount": Decimal("60"),
        "currency": "GBP",
        "accountId": "",
        "message": "Successful payment",
        "secure3D": True,
        "rrn": "123456789012",
        "errorCode": 0,
        "success": True,
        "settled": True,
        "paymentMethod": "card",
        "cardSchemeName": "VISA",
        "merchantCustomData": "",
    }
    body["signature"] = signing.dna_callback_signature(
        transaction_id=transaction_id,
        amount=body["amount"],
        currency="GBP",
        invoice_id=str(payment.id),
        error_code=0,
        success=True,
        secret=secret,
    )
    return dump_json(body)


def _endpoints(sink_url: str, pms_url: str) -> dict[str, str]:
    env = {}
    for destination, prefix in ENV_PREFIX.items():
        if destination == Destination.PMS:
            env[f"{prefix}_URL"], env[f"{prefix}_SECRET"] = f"{pms_url}/writebacks", PMS_SECRET
        else:
            env[f"{prefix}_URL"] = f"{sink_url}/{destination}"
            env[f"{prefix}_SECRET"] = SINK_SECRET
    return env


class RoundTrips(threading.Thread):
    """The baseline, measured during the load: INSERT + COMMIT on one connection, SELECT on another."""

    def __init__(self, database: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.database, self.interval = database, 1 / rate
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        with (
            psycopg.connect(**conninfo(self.database), autocommit=True) as writer,
            psycopg.connect(**conninfo(self.database), autocommit=True) as reader,
        ):
            writer.execute(
                "CREATE TABLE IF NOT EXISTS bench_round_trip (id bigserial PRIMARY KEY, at timestamptz)"
            )
            while not self.done.is_set():
                started = time.perf_counter()
                (row_id,) = writer.execute(
                    "INSERT INTO bench_round_trip (at) VALUES (now()) RETURNING id"
                ).fetchone()
                found = reader.execute("SELECT id FROM bench_round_trip WHERE id = %s", [row_id])
                assert found.fetchone() == (row_id,)
                self.samples.append(time.perf_counter() - started)
                time.sleep(max(0.0, self.interval - (time.perf_counter() - started)))


def _latencies(payment_ids, destination: str) -> tuple[list[float], list[float], int]:
    rows = OutboxMessage.objects.filter(
        payment_id__in=payment_ids, destination=destination, event_type="payment.captured"
    )
    received = dict(
        WebhookEvent.objects.filter(payment_id__in=payment_ids).values_list(
            "payment_id", "received_at"
        )
    )
    commit, webhook = [], []
    for payment_id, occurred, delivered in rows.filter(delivered_at__isnull=False).values_list(
        "payment_id", "occurred_at", "delivered_at"
    ):
        commit.append((delivered - occurred).total_seconds())
        webhook.append((delivered - received[payment_id]).total_seconds())
    return commit, webhook, rows.count()


def _run(base: str, database: str, payments: list[Payment], secret: str, rate: float) -> list:
    """Post one callback per payment at `rate`, wait for every delivery, and return table rows."""
    requests = [
        raw_post(base, "/webhooks/dna/", {"Content-Type": "application/json"}, _callback(p, secret))
        for p in payments
    ]
    baseline = RoundTrips(database, rate)
    baseline.start()
    posted = post_at_rate(base, requests, rate)
    baseline.done.set()
    ids = [p.id for p in payments]
    due = OutboxMessage.objects.filter(
        payment_id__in=ids, destination__in=[Destination.PMS, Destination.FINANCIAL_INSIGHTS]
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        due.count() < 2 * posted.ok or due.filter(delivered_at__isnull=True).exists()
    ):
        time.sleep(0.5)
    baseline.join(timeout=5)
    captured = Payment.objects.filter(id__in=ids, state=PaymentState.CAPTURED).count()
    processing = [
        (done - received).total_seconds()
        for received, done in WebhookEvent.objects.filter(
            payment_id__in=ids, processed_at__isnull=False
        ).values_list("received_at", "processed_at")
    ]
    pms_commit, pms_webhook, pms_rows = _latencies(ids, Destination.PMS)
    fi_commit, fi_webhook, fi_rows = _latencies(ids, Destination.FINANCIAL_INSIGHTS)
    failed = {k: v for k, v in posted.statuses.items() if not 200 <= k < 300}
    print(
        f"at {rate:,.0f}/s: {posted.ok:,} of {len(payments):,} callbacks answered 2xx "
        f"({posted.achieved:,.1f}/s achieved{f'; others {failed}' if failed else ''}); "
        f"{captured:,} captured; {pms_rows:,} PMS writebacks and {fi_rows:,} Financial Signals "
        f"written, {len(pms_commit):,} and {len(fi_commit):,} delivered"
    )
    base_p99 = percentile(baseline.samples, 99)
    rows = [
        (
            f"{rate:,.0f}/s baseline: INSERT+COMMIT, SELECT elsewhere",
            pcts(baseline.samples),
            "",
            "",
        ),
        (f"{rate:,.0f}/s callback HTTP answer", pcts(posted.latencies), "", ""),
        (f"{rate:,.0f}/s webhook stored → processed (queue + task)", pcts(processing), "", ""),
    ]
    for label, samples in (
        ("PMS writeback, written → delivered", pms_commit),
        ("Financial Signal, written → delivered", fi_commit),
        ("PMS writeback, webhook → delivered", pms_webhook),
        ("Financial Signal, webhook → delivered", fi_webhook),
    ):
        p99 = percentile(samples, 99)
        rows.append(
            (
                f"{rate:,.0f}/s {label}",
                pcts(samples),
                f"{p99 / base_p99:,.0f}x baseline p99",
                f"{'OK' if p99 < 1 else 'OVER'}: p99 < 1 s at 50/s",
            )
        )
    return rows


def main() -> None:
    seconds = float(os.environ.get("BENCH_EMISSION_SECONDS", "20"))
    rates = [float(r) for r in os.environ.get("BENCH_EMISSION_RATES", "50,25").split(",")]
    web_workers = int(os.environ.get("BENCH_EMISSION_WEB_WORKERS", "2"))
    webhook_workers = int(os.environ.get("BENCH_EMISSION_WEBHOOK_WORKERS", "2"))
    relay_workers = int(os.environ.get("BENCH_EMISSION_RELAY_WORKERS", "2"))
    sink = MessageSink(secret=SINK_SECRET, name="bench-modules")
    sink.start()
    pms = serve_pms(port=0, secret=PMS_SECRET)
    rows = []
    try:
        with (
            bench_database("bench_emission") as name,
            private_redis() as redis_url,
            publishing_to(redis_url),  # anything this process queues goes there
        ):
            started = time.perf_counter()
            total = sum(int(rate * seconds) for rate in rates)
            payments = _presented(total)
            print(f"presented {total:,} online payments in {time.perf_counter() - started:.1f} s")
            print(
                f"gunicorn {web_workers} workers; Celery: {webhook_workers} processes on the "
                f"webhooks queue (+ beat), {relay_workers} on outbox,writeback,default"
            )
            env = production_env(
                database=name, redis_url=redis_url, **_endpoints(sink.url, pms.url)
            )
            with (
                gunicorn("primoro_payments.wsgi:application", env=env, workers=web_workers) as base,
                celery_worker(env=env, queues="webhooks", concurrency=webhook_workers, beat=True),
                celery_worker(
                    env=env, queues="outbox,writeback,default", concurrency=relay_workers
                ),
            ):
                time.sleep(3)  # the pools are up and connected before the clock starts
                for rate in rates:
                    batch, payments = (
                        payments[: int(rate * seconds)],
                        payments[int(rate * seconds) :],
                    )
                    rows += _run(base, name, batch, env["DNA_CLIENT_SECRET"], rate)
    finally:
        sink.stop()
        pms.stop()
    print(
        f"{len(sink.received):,} module deliveries for {len(sink.stored):,} messages "
        f"(each stored once by its consumer); {len(pms.writebacks):,} PMS writebacks recorded"
    )
    print_table(rows, headers=("measure", "p50 / p95 / p99", "ratio", "target"))
    print("(Shared 2-core machine: other work running at the same time makes these figures noisy.)")
