"""Payment API throughput: create and read through the real REST API, against a bare Django view.

Run: `make bench BENCH_ARGS=api` or `python -m benchmarks bench_api`.

gunicorn (4 sync workers, production mode: DEBUG off, JSON logs, random
secrets) serves the project on a fresh bench database and a redis-server of
its own; wrk (16 connections, BENCH_API_SECONDS each, default 10) drives it
from the same cores with a tablet's staff token:

- create: `POST /api/v1/staff/collections/` for a pay-by-link payment, every
  request with its own invoice and `Idempotency-Key` (the permission check,
  tenant scoping, the payment, its link, audit events and the Communication Hub
  outbox row, and the stored idempotent answer);
- read: `GET /api/v1/staff/payments/<id>/` over the payments just created.

The baseline is the same gunicorn serving a bare Django no-op JSON view
(`baseline_wsgi.py`). Refunds have no REST endpoint (staff refund in the
portal); their service-layer rate is in bench_payments. Figures are printed,
never asserted. Target (TARGETS.md): payment API calls >= 100 req/s per core.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

from benchmarks.common import (
    WrkRequest,
    bench_database,
    bench_practice,
    gunicorn,
    letters,
    print_table,
    private_redis,
    production_env,
    write_wrk_requests,
    wrk,
)
from payments.api.tokens import staff_api_token_issue
from payments.models import Payment

WORKERS = 4
CONNECTIONS = 16
COLLECTIONS = "/api/v1/staff/collections/"


def _world() -> tuple[dict, str]:
    """A practice, site, patient and a reception user with a tablet token."""
    world = bench_practice("Bench API", username="bench_reception")
    token = staff_api_token_issue(user=world.user, label="bench").token
    return {"patient_id": str(world.patient.pk), "site_id": str(world.site.pk)}, token


def _creates(count: int, ids: dict) -> list[WrkRequest]:
    run = letters(uuid.uuid4().int, 8)
    out = []
    for n in range(count):
        body = {
            **ids,
            "target_type": "invoice",
            "target_id": f"INV-{run}{letters(n)}",  # no digit runs: the card-number guard
            "amount": "45.50",
            "method": "pay_by_link",
            "channel": "sms",
        }
        key = ("Idempotency-Key", f"bench-{run}-{letters(n)}")
        out.append(WrkRequest("POST", COLLECTIONS, key, json.dumps(body).encode()))
    return out


def main() -> None:
    seconds = int(os.environ.get("BENCH_API_SECONDS", "10"))
    pool = int(os.environ.get("BENCH_API_REQUESTS", "30000"))
    cores = os.cpu_count() or 1
    baseline_dir = str(Path(__file__).resolve().parent)
    with (
        bench_database("bench_api") as name,
        private_redis() as redis_url,
        tempfile.TemporaryDirectory(prefix="bench-api-") as scratch,
    ):
        ids, token = _world()
        env = production_env(
            database=name,
            redis_url=redis_url,
            API_THROTTLE_STAFF="100000000/min",  # the bench is one staff member at full speed
        )
        files = {label: Path(scratch) / f"{label}.txt" for label in ("warm", "create", "noop")}
        write_wrk_requests(files["warm"], _creates(2000, ids))
        write_wrk_requests(files["create"], _creates(pool, ids))
        write_wrk_requests(files["noop"], [WrkRequest("GET", "/noop/")] * 64)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        load = {"seconds": seconds, "connections": CONNECTIONS, "headers": headers}
        with (
            gunicorn("baseline_wsgi:application", env=env, pythonpath=baseline_dir) as bare,
            gunicorn("primoro_payments.wsgi:application", env=env) as app,
        ):
            print(f"gunicorn x2, {WORKERS} sync workers each; wrk -t2 -c{CONNECTIONS} -d{seconds}s")
            wrk(app, files["warm"], **{**load, "seconds": 2})
            noop = wrk(bare, files["noop"], **load)
            create = wrk(app, files["create"], **load)
            payment_ids = list(Payment.objects.values_list("pk", flat=True))
            reads = [WrkRequest("GET", f"/api/v1/staff/payments/{pk}/") for pk in payment_ids]
            files["read"] = Path(scratch) / "read.txt"
            write_wrk_requests(files["read"], reads)
            read = wrk(app, files["read"], **load)

    rows = [
        ("baseline: bare Django no-op JSON view (req/s)", f"{noop.rate:,.0f}", "", ""),
    ]
    for label, result in (
        ("POST /api/v1/staff/collections/ (pay-by-link)", create),
        ("GET /api/v1/staff/payments/<id>/", read),
    ):
        rows += [
            (
                f"{label} (req/s)",
                f"{result.rate:,.0f} ({result.rate / cores:,.0f} per core)",
                f"{noop.rate:,.0f} no-op",
                f"{result.rate / noop.rate:.0%} of no-op; target >= 100 req/s per core",
            ),
            ("  wrk latency p50 / p95 / p99", result.latency(), "", ""),
        ]
    print_table(rows)
    for label, result in (("no-op", noop), ("create", create), ("read", read)):
        if result.non_2xx or result.errors:
            print(f"note: {label}: {result.non_2xx} non-2xx, {result.errors} socket errors")
    if create.wrapped:
        print(
            f"note: create ran out of unique requests ({create.wrapped} wraps; idempotent replays)"
        )
    print(f"{len(payment_ids):,} payments created; {cores} cores, shared with the load generator")


if __name__ == "__main__":
    main()
