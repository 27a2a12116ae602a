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

import json
import os
import shutil
import string
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from benchmarks.common import (
    RateResult,
    bench_database,
    conninfo,
    gunicorn,
    pcts,
    post_at_rate,
    print_table,
    private_redis,
    production_env,
    raw_post,
)
from integrations.models import WebhookEvent
from integrations.simulators.gocardless import webhook_body
from integrations.simulators.signing import gocardless_signature

WORKERS = 4
CONNECTIONS = 16
WEBHOOK_PATH = "/webhooks/gocardless/"
BASELINE_TABLE = "bench_baseline_event"

# wrk's Lua: each thread loads its slice of the pre-signed bodies at start and
# sends them in turn; done() prints one JSON line the bench parses.
WRK_SCRIPT = r"""
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads, path, header = args[1], tonumber(args[2]), args[3], args[4]
  requests, n, i, wrapped = {}, 0, 0, 0
  local line_no = 0
  for line in io.lines(file) do
    if line_no % nthreads == id then
      local sig, body = line:match("^(%x+) (.*)$")
      n = n + 1
      requests[n] = wrk.format("POST", path,
        {["Content-Type"] = "application/json", [header] = sig}, body)
    end
    line_no = line_no + 1
  end
end

function request()
  i = i + 1
  if i > n then i = 1; wrapped = wrapped + 1 end
  return requests[i]
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do wraps = wraps + thread:get("wrapped") end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "timeouts": %d, "non_2xx": %d, "wrapped": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status, wraps,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    rate: float
    requests: int
    non_2xx: int
    errors: int
    wrapped: int
    p50: float
    p95: float
    p99: float

    def latency(self) -> str:
        return f"{self.p50:,.1f} / {self.p95:,.1f} / {self.p99:,.1f} ms"


def _letters(number: int, width: int = 7) -> str:
    """`number` in base 26 (A-Z): ids without digit runs, which the card-number guard would refuse."""
    out = ""
    for _ in range(width):
        number, digit = divmod(number, 26)
        out = string.ascii_uppercase[digit] + out
    return out


def _bodies(count: int, secret: str) -> list[tuple[str, bytes]]:
    """`count` signed GoCardless webhooks, one handled event each, every event id unique."""
    run = _letters(uuid.uuid4().int, 8)
    created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = []
    for n in range(count):
        event = {
            "id": f"EV{run}{_letters(n)}",
            "created_at": created,
            "action": "confirmed",
            "resource_type": "payments",
            "links": {"payment": f"PM{run}{_letters(n)}"},
            "details": {
                "origin": "gocardless",
                "cause": "payment_confirmed",
                "description": "Enough time has passed since the payment was submitted.",
            },
            "metadata": {},
        }
        body = webhook_body([event], webhook_id=f"WB{run}{_letters(n)}")
        out.append((gocardless_signature(body, secret), body))
    return out


def _write(path: Path, bodies: list[tuple[str, bytes]]) -> None:
    with path.open("wb") as out:
        for signature, body in bodies:
            out.write(signature.encode() + b" " + body + b"\n")


def _wrk(url: str, path: str, bodies_file: Path, script: Path, seconds: int) -> WrkResult:
    threads = 2
    run = subprocess.run(
        [
            "wrk",
            *("-t", str(threads), "-c", str(CONNECTIONS), "-d", f"{seconds}s"),
            *("--timeout", "10s", "-s", str(script), url + path),
            *("--", str(bodies_file), str(threads), path, "Webhook-Signature"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in run.stdout.splitlines() if x.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        rate=data["requests"] / (data["duration_us"] / 1e6),
        requests=data["requests"],
        non_2xx=data["non_2xx"],
        errors=sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
        wrapped=data["wrapped"],
        p50=data["p50_us"] / 1000,
        p95=data["p95_us"] / 1000,
        p99=data["p99_us"] / 1000,
    )


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
    if not shutil.which("wrk"):
        raise SystemExit("bench_webhooks needs wrk (Debian: apt-get install -y wrk).")
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
        script = Path(scratch) / "post.lua"
        script.write_text(WRK_SCRIPT)

        def bodies_file(label: str, count: int) -> Path:
            path = Path(scratch) / f"{label}.txt"
            _write(path, _bodies(count, secret))
            return path

        started = time.perf_counter()
        files = {label: bodies_file(label, pool) for label in ("app", "baseline", "warm")}
        print(f"signed {3 * pool:,} bodies in {time.perf_counter() - started:.1f} s")
        files["unsigned"] = Path(scratch) / "unsigned.txt"
        _write(files["unsigned"], [("0" * 64, body) for _, body in _bodies(pool // 4, secret)])

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
            _wrk(app, WEBHOOK_PATH, files["warm"], script, 2)  # warm every worker's connections
            _wrk(bare, "/hmac-insert/", files["warm"], script, 2)
            noop = _wrk(bare, "/noop/", files["baseline"], script, seconds)
            hmac_insert = _wrk(bare, "/hmac-insert/", files["baseline"], script, seconds)
            warm_stored = WebhookEvent.objects.count()
            real = _wrk(app, WEBHOOK_PATH, files["app"], script, seconds)
            # The same requests with a wrong signature: refused (498) after the middleware, the
            # card-number guard and the HMAC, before any database or Redis work.
            refused = _wrk(app, WEBHOOK_PATH, files["unsigned"], script, seconds)

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
