"""Signed webhook ingest under concurrent delivery: the real receiver against bare Django baselines.

Run: `make bench BENCH_ARGS=webhooks` or `python -m benchmarks bench_webhooks`.

What runs, all on this machine's loopback (the load generator shares the cores):

- gunicorn, 4 sync workers, serving the real project in production mode
  (DEBUG off, JSON logs at INFO, random secrets) on a fresh bench database and
  a redis-server of its own: `POST /webhooks/gocardless/` verifies the hex
  HMAC of the raw body, stores each event once (unique provider + event id)
  and queues its processing task in Redis after commit. Every request carries
  one `payments.confirmed` event with a unique id, so every request stores.
- the same gunicorn serving `benchmarks/baseline_wsgi.py`: a bare Django view
  that checks the same HMAC and INSERTs the body (TARGETS.md ~1,830 req/s),
  and a no-op JSON view (~4,250 req/s).

1. Maximum rate: wrk (16 connections, 2 threads, BENCH_WEBHOOK_SECONDS, default
   10) posting pre-signed bodies read by a Lua script (wrk cannot sign), each
   thread its own slice so no id repeats. wrk reports req/s and latency. The
   same requests with a wrong signature (refused with 498 before any database
   or Redis work) split the receiver's cost between its HTTP, middleware and
   HMAC part and storing + queueing.
2. Latency at 80 % of the real receiver's maximum: a Python asyncio generator
   posting at a fixed rate (open loop: each request is due at its own instant
   and its latency is counted from then, so a stall is not hidden), against the
   real receiver, the HMAC+INSERT view and the no-op view (the generator's own
   floor).

Figures are printed, never asserted. Targets (TARGETS.md): real receiver >= 60 %
of the HMAC+INSERT view's rate; p99 < 50 ms at 80 % of that load. Afterwards it
checks that every 2xx stored exactly one event and queued one task.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from benchmarks.common import (
    RateResult,
    WrkRequest,
    bench_database,
    conninfo,
    gunicorn,
    letters,
    pcts,
    post_at_rate,
    print_table,
    private_redis,
    production_env,
    raw_post,
    write_wrk_requests,
    wrk,
)
from integrations.models import WebhookEvent
from integrations.simulators.gocardless import webhook_body
from integrations.simulators.signing import gocardless_signature

WORKERS = 4
CONNECTIONS = 16
WEBHOOK_PATH = "/webhooks/gocardless/"
JSON = {"Content-Type": "application/json"}
BASELINE_TABLE = "bench_baseline_event"


def _bodies(count: int, secret: str) -> list[tuple[str, bytes]]:
    """`count` signed GoCardless webhooks, one handled event each, every event id unique."""
    run = letters(uuid.uuid4().int, 8)
    created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = []
    for n in range(count):
        event = {
            "id": f"EV{run}{letters(n)}",
            "created_at": created,
            "action": "confirmed",
            "resource_type": "payments",
            "links": {"payment": f"PM{run}{letters(n)}"},
            "details": {
                "origin": "gocardless",
                "cause": "payment_confirmed",
                "description": "Enough time has passed since the payment was submitted.",
            },
            "metadata": {},
        }
        body = webhook_body([event], webhook_id=f"WB{run}{letters(n)}")
        out.append((gocardless_signature(body, secret), body))
    return out


def _fixed_rate(base: str, path: str, bodies: list[tuple[str, bytes]], rate: float) -> RateResult:
    requests = [
        raw_post(base, path, {"Content-Type": "application/json", "Webhook-Signature": sig}, body)
        for sig, body in bodies
    ]
    return post_at_rate(base, requests, rate)


# --- The run ------------------------------------------------------------------------------------


def _queued_tasks(redis_url: str) -> int:
    return redis.Redis.from_url(redis_url).llen("webhooks")


def main() -> None:
    seconds = int(os.environ.get("BENCH_WEBHOOK_SECONDS", "10"))
    rate_seconds = int(os.environ.get("BENCH_WEBHOOK_RATE_SECONDS", str(seconds)))
    pool = int(os.environ.get("BENCH_WEBHOOK_BODIES", "60000"))
    baseline_dir = str(Path(__file__).resolve().parent)
    with (
        bench_database("bench_webhooks") as name,
        private_redis() as redis_url,
        tempfile.TemporaryDirectory(prefix="bench-webhooks-") as scratch,
    ):
        with psycopg.connect(**conninfo(name), autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE {BASELINE_TABLE} (id bigserial PRIMARY KEY, body jsonb NOT NULL, "
                "received_at timestamptz NOT NULL DEFAULT now())"
            )
        env = production_env(database=name, redis_url=redis_url)
        secret = env["GOCARDLESS_WEBHOOK_SECRET"]

        def requests_file(label: str, path: str, bodies: list[tuple[str, bytes]]) -> Path:
            out = Path(scratch) / f"{label}.txt"
            header = "Webhook-Signature"
            write_wrk_requests(out, [WrkRequest("POST", path, (header, s), b) for s, b in bodies])
            return out

        started = time.perf_counter()
        baseline_bodies = _bodies(pool, secret)
        files = {
            "app": requests_file("app", WEBHOOK_PATH, _bodies(pool, secret)),
            "noop": requests_file("noop", "/noop/", baseline_bodies),
            "hmac": requests_file("hmac", "/hmac-insert/", baseline_bodies),
            "warm-app": requests_file("warm-app", WEBHOOK_PATH, _bodies(pool, secret)),
            "warm-hmac": requests_file("warm-hmac", "/hmac-insert/", _bodies(pool, secret)),
            "unsigned": requests_file(
                "unsigned",
                WEBHOOK_PATH,
                [("0" * 64, body) for _, body in _bodies(pool // 4, secret)],
            ),
        }
        print(f"signed {4 * pool:,} bodies in {time.perf_counter() - started:.1f} s")

        logs = {"baseline": Path(scratch) / "baseline.log", "app": Path(scratch) / "app.log"}
        with (
            gunicorn(
                "baseline_wsgi:application",
                env=env,
                pythonpath=baseline_dir,
                log_path=str(logs["baseline"]),
            ) as bare,
            gunicorn(
                "primoro_payments.wsgi:application", env=env, log_path=str(logs["app"])
            ) as app,
        ):
            print(f"gunicorn x2, {WORKERS} sync workers each; wrk -t2 -c{CONNECTIONS} -d{seconds}s")
            load = {"seconds": seconds, "connections": CONNECTIONS, "headers": JSON}
            wrk(app, files["warm-app"], **{**load, "seconds": 2})  # warm every worker
            wrk(bare, files["warm-hmac"], **{**load, "seconds": 2})
            noop = wrk(bare, files["noop"], **load)
            hmac_insert = wrk(bare, files["hmac"], **load)
            warm_stored = WebhookEvent.objects.count()
            real = wrk(app, files["app"], **load)
            # The same requests with a wrong signature: refused (498) after the middleware, the
            # card-number guard and the HMAC, before any database or Redis work.
            refused = wrk(app, files["unsigned"], **load)

            rate = 0.8 * real.rate
            count = int(rate * rate_seconds)
            at_rate = {
                "noop": _fixed_rate(bare, "/noop/", _bodies(count, secret), rate),
                "hmac": _fixed_rate(bare, "/hmac-insert/", _bodies(count, secret), rate),
                "real": _fixed_rate(app, WEBHOOK_PATH, _bodies(count, secret), rate),
            }
        stored = WebhookEvent.objects.count()
        queued = _queued_tasks(redis_url)
        errors = {
            label: [x for x in path.read_text().splitlines() if "Error" in x or "error" in x][-5:]
            for label, path in logs.items()
        }

    rows = [
        (
            "baseline: bare Django no-op JSON view (req/s)",
            f"{noop.rate:,.0f}",
            "",
            "TARGETS ~4,250",
        ),
        (
            "baseline: bare Django HMAC + INSERT view (req/s)",
            f"{hmac_insert.rate:,.0f}",
            "",
            "TARGETS ~1,830",
        ),
        (
            "POST /webhooks/gocardless/ (req/s)",
            f"{real.rate:,.0f}",
            f"{hmac_insert.rate:,.0f} HMAC+INSERT",
            f"{real.rate / hmac_insert.rate:.0%}; target >= 60%",
        ),
        (
            "  same POST, bad signature (498, no database work)",
            f"{refused.rate:,.0f}",
            f"{noop.rate:,.0f} no-op",
            f"{refused.rate / noop.rate:.0%} of no-op",
        ),
        ("  wrk latency p50 / p95 / p99, no-op", noop.latency(), "", ""),
        ("  wrk latency p50 / p95 / p99, HMAC + INSERT", hmac_insert.latency(), "", ""),
        ("  wrk latency p50 / p95 / p99, real receiver", real.latency(), "", ""),
    ]
    for label, key in (
        ("no-op view", "noop"),
        ("HMAC + INSERT view", "hmac"),
        ("real receiver", "real"),
    ):
        result = at_rate[key]
        rows.append(
            (
                f"at {result.target:,.0f} req/s (80% of real max), {label}: p50 / p95 / p99",
                pcts(result.latencies),
                f"achieved {result.achieved:,.0f} req/s",
                "target p99 < 50 ms" if key == "real" else "",
            )
        )
    print_table(rows)
    problems = []
    for label, result in (("no-op", noop), ("HMAC+INSERT", hmac_insert), ("real", real)):
        if result.non_2xx or result.errors:
            problems.append(f"wrk {label}: {result.non_2xx} non-2xx, {result.errors} socket errors")
        if result.wrapped and result is real:  # only the real receiver de-duplicates
            problems.append(f"wrk {label}: ran out of unique bodies ({result.wrapped} wraps)")
    for key, result in at_rate.items():
        if result.ok != len(result.latencies):
            problems.append(f"fixed rate {key}: statuses {result.statuses}")
    # wrk does not count requests still in flight when it stops (at most one per connection).
    answered = real.requests - real.non_2xx + at_rate["real"].ok
    measured = stored - warm_stored
    consistent = answered <= measured <= answered + CONNECTIONS and queued == stored
    print(
        f"stored {measured:,} webhook events for {answered:,} answered 2xx "
        f"(+ up to {CONNECTIONS} in flight at wrk's stop); {queued:,} processing tasks queued "
        f"for {stored:,} stored in all{'' if consistent else ' -- MISMATCH'}"
    )
    for problem in problems:
        print(f"note: {problem}")
    if problems:
        for label, lines in errors.items():
            for line in lines:
                print(f"  {label} log: {line[:300]}")
    print("(Shared 2-core machine: other work running at the same time makes these figures noisy.)")
