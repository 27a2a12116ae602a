"""A real Celery worker process relays committed outbox rows to real HTTP receivers.

The worker is `celery -A primoro_payments worker` in a subprocess, on the test
database (the rows are committed: a transactional test) and the test Redis,
with eager mode off and the module endpoints given through the environment,
exactly as in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from celery import current_app
from celery.exceptions import AlwaysEagerIgnored
from django.conf import settings

from integrations.destinations import ENV_PREFIX
from integrations.models import Destination, OutboxMessage
from payments.models import PmsWritebackStatus
from tests.integrations.conftest import SECRETS, capture_payment, module_path

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    db = settings.DATABASES["default"]
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = quote(db["HOST"] or "127.0.0.1", safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


def _worker_env(sink_url: str, pms_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "primoro_payments.settings_test",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "LOG_LEVEL": "WARNING",
    }
    for destination, prefix in ENV_PREFIX.items():
        url = (
            f"{pms_url}/writebacks"
            if destination == Destination.PMS
            else f"{sink_url}{module_path(destination)}"
        )
        env[f"{prefix}_URL"] = url
        env[f"{prefix}_SECRET"] = SECRETS[destination]
    return env


def _wait_until(predicate, *, timeout: float, worker: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if worker.poll() is not None:
            return False
        time.sleep(0.2)
    return predicate()


@contextmanager
def _celery_worker(env: dict[str, str]):
    """A worker on the outbox, writeback and default queues; always stopped on the way out."""
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "primoro_payments",
                "worker",
                "-Q",
                "outbox,writeback,default",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"outbox-test-{uuid.uuid4().hex[:8]}@%h",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield worker, log
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def test_a_real_worker_delivers_each_message_once_signed(
    sink, pms_sim, practice, site, patient, system_actor, provider_actor
):
    payments = [
        capture_payment(system_actor, provider_actor, practice, site, patient, target_id=f"INV-{n}")
        for n in range(3)
    ]
    rows = list(OutboxMessage.objects.all())
    assert len(rows) == 9  # per payment: a Financial Signal, a receipt, a PMS writeback
    assert {r.status for r in rows} == {OutboxMessage.Status.PENDING}

    with _celery_worker(_worker_env(sink.url, pms_sim.url)) as (worker, log):
        with warnings.catch_warnings():
            # This test process runs Celery eagerly; send_task still goes to the real broker.
            warnings.simplefilter("ignore", AlwaysEagerIgnored)
            current_app.send_task("integrations.tasks.relay_outbox")

        done = _wait_until(
            lambda: (
                not OutboxMessage.objects.exclude(status=OutboxMessage.Status.DELIVERED).exists()
            ),
            timeout=90,
            worker=worker,
        )
        if not done:
            log.seek(0)
            pytest.fail("The worker did not deliver every row:\n" + log.read().decode()[-4000:])

    module_rows = {str(r.id) for r in rows if r.destination != Destination.PMS}
    per_event = Counter(r.event_id for r in sink.received)
    assert set(per_event) == module_rows
    assert set(per_event.values()) == {1}
    assert all(r.signature_valid for r in sink.received)
    assert sorted(w["event_id"] for w in pms_sim.writebacks) == sorted(
        str(r.id) for r in rows if r.destination == Destination.PMS
    )
    assert len(pms_sim.received) == 3
    assert all(r.signature_valid for r in pms_sim.received)
    for payment in payments:
        payment.refresh_from_db()
        assert payment.pms_writeback_status == PmsWritebackStatus.WRITTEN
