"""Service layer throughput: create → capture → partial refund, against pgbench on the same machine.

Run: `make bench` (all) or `python -m benchmarks.bench_payments`.

Each of BENCH_WORKERS processes (default 8, like `pgbench -c 8`; processes, as
gunicorn and Celery run them) works with its own database connection and its
own practice, pushing payments through the real service functions: every step locks the row, applies the transition,
appends hash-chained audit events and writes outbox rows in one transaction.
Figures are printed, never asserted. Target (TARGETS.md): create → capture at
≥ 25% of pgbench's tps in the same run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from decimal import Decimal

from django.contrib.auth.models import Group, User
from django.db import connection, connections

from audit.actors import Actor
from audit.models import AuditEvent
from audit.verify import verify_all
from benchmarks.common import bench_database, pgbench_tps, print_table
from integrations.models import OutboxMessage
from payments import services
from practices.models import Patient, Practice, PracticeGroup, Site, StaffProfile
from terminals.models import Terminal


def _world(index: int, group: PracticeGroup) -> tuple:
    """One practice with a site, terminal, patient and refund manager; returned as ids."""
    practice = Practice.objects.create(
        group=group, name=f"Bench {index}", refund_approval_threshold=None
    )
    site = Site.objects.create(practice=practice, name="Main")
    terminal = Terminal.objects.create(
        practice=practice, site=site, label="T", kind="countertop", tid=f"BENCH-{index}"
    )
    patient = Patient.objects.create(
        practice=practice, display_name="Bench Patient", pms_patient_id=f"P{index}"
    )
    user = User.objects.create_user(username=f"bench{index}")
    user.groups.set(Group.objects.filter(name="refund_manager"))
    StaffProfile.objects.create(user=user, practice=practice, all_sites=True)
    return practice.pk, site.pk, terminal.pk, patient.pk, user.pk


def _work(args) -> int:
    """In a worker process: push `count` payments through the service layer."""
    (practice_id, site_id, terminal_id, patient_id, user_id), count, refund, start_at = args
    practice = Practice.objects.get(pk=practice_id)
    site, terminal = Site.objects.get(pk=site_id), Terminal.objects.get(pk=terminal_id)
    patient, staff = Patient.objects.get(pk=patient_id), Actor.staff(User.objects.get(pk=user_id))
    provider = Actor.provider("dna")
    time.sleep(max(0.0, start_at - time.time()))  # start together
    try:
        for i in range(count):
            payment = services.payment_create(
                actor=staff,
                practice=practice,
                site=site,
                patient=patient,
                target_type="invoice",
                target_id=f"INV-{i}",
                amount=Decimal("120.00"),
                method="terminal",
                terminal=terminal,
            )
            services.payment_capture(payment_id=payment.id, actor=provider)
            if refund:
                result = services.refund_request(
                    payment_id=payment.id, actor=staff, amount="20.00", reason_code="other"
                )
                services.refund_complete(refund_id=result.refund.id, actor=provider)
        return count
    finally:
        connection.close()


def _run(pool, worlds, per_thread: int, *, refund: bool) -> tuple[int, float, int]:
    before = AuditEvent.objects.count()
    start_at = time.time() + 1.0
    done = sum(pool.map(_work, [(w, per_thread, refund, start_at) for w in worlds]))
    elapsed = time.time() - start_at
    return done, elapsed, AuditEvent.objects.count() - before


def main() -> None:
    threads = int(os.environ.get("BENCH_WORKERS", "8"))
    payments = int(os.environ.get("BENCH_PAYMENTS", "2000"))
    per_thread = max(1, payments // threads)
    baseline = pgbench_tps(
        clients=threads, threads=2, seconds=int(os.environ.get("BENCH_PGBENCH_SECONDS", "15"))
    )
    with bench_database("bench_payments"):
        group = PracticeGroup.objects.create(name="Bench")
        worlds = [_world(i, group) for i in range(threads)]
        connections.close_all()  # children must not share the parent's connection
        with multiprocessing.get_context("fork").Pool(threads) as pool:
            capture_n, capture_s, capture_events = _run(pool, worlds, per_thread, refund=False)
            full_n, full_s, full_events = _run(pool, worlds, per_thread, refund=True)
        outbox_rows = OutboxMessage.objects.count()
        started = time.perf_counter()
        results = verify_all()
        verify_s = time.perf_counter() - started
        checked = sum(r.events_checked for r in results)
        chain_ok = all(r.ok for r in results)

    capture_tps = capture_n / capture_s
    full_tps = full_n / full_s
    rows = [
        (
            f"baseline: pgbench -c {threads} -j 2 (tps)",
            f"{baseline:,.0f}" if baseline else "n/a",
            "",
            "",
        ),
        (
            "create → capture (payments/s)",
            f"{capture_tps:,.0f}",
            f"{baseline:,.0f} pgbench" if baseline else "",
            f"{capture_tps / baseline:.0%} of pgbench; target ≥ 25%" if baseline else "",
        ),
        ("create → capture (audit events/s)", f"{capture_events / capture_s:,.0f}", "", ""),
        ("create → capture → partial refund (payments/s)", f"{full_tps:,.0f}", "", ""),
        (
            "create → capture → partial refund (audit events/s)",
            f"{full_events / full_s:,.0f}",
            "",
            "",
        ),
        (
            f"verify_audit after the run, chain {'OK' if chain_ok else 'BROKEN'} (events/s)",
            f"{checked / verify_s:,.0f}",
            "",
            "target ≥ 100,000",
        ),
    ]
    print(
        f"{threads} worker processes, {capture_n} + {full_n} payments, {outbox_rows} outbox rows written"
    )
    print_table(rows)


if __name__ == "__main__":
    main()
