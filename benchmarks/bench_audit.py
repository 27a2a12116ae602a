"""Audit log: verify and export rates, export memory, against a raw PostgreSQL read.

Run: DEBUG=true DJANGO_SETTINGS_MODULE=primoro_payments.settings python -m benchmarks.bench_audit

It never touches real data: it creates a dedicated database (the configured
name + `_bench_audit`), migrates it, fills it with BENCH_AUDIT_EVENTS events
(default 1,000,000, the TARGETS.md figure) spread over two practices
with valid hash chains (built with `audit.chain`, loaded with COPY: setup, not
the path being measured), measures, and drops the database again (set
BENCH_AUDIT_KEEP_DB=1 to keep it for another run with BENCH_AUDIT_REUSE_DB=1).

Targets (TARGETS.md): export >= 50,000 events/s with peak memory < 200 MB;
verify_audit >= 100,000 events/s. Figures are printed, never asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from django.conf import settings
from django.db import connection
from psycopg.types.json import Jsonb

from audit.chain import GENESIS_HASH, HASHED_FIELDS, chain_hash
from audit.export import export_chunks, filtered_events
from audit.models import AuditChainHead, EventType
from audit.verify import verify_all
from benchmarks.common import bench_database, conninfo, database_url, print_table
from practices.models import Practice, PracticeGroup

COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")
EVENT_TYPES = [e.value for e in EventType]
STATES = ["initiated", "awaiting_customer_action", "authorised", "captured", "refunded"]
PRACTICES = 2


def _rows(practice_id, count: int, start: datetime):
    """`count` chained events for one practice, as COPY rows in COLUMNS order."""
    sites = [uuid.uuid4() for _ in range(3)]
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        payment = uuid.uuid4()
        values = [
            uuid.uuid4(),
            practice_id,
            seq,
            EVENT_TYPES[seq % len(EVENT_TYPES)],
            start + timedelta(milliseconds=seq * 7, microseconds=seq % 1000),
            "staff" if seq % 3 else "system",
            str(seq % 40),
            f"Sam Staff{seq % 40}",
            sites[seq % 3],
            uuid.uuid4() if seq % 2 else None,
            payment,
            "payment",
            str(payment),
            Decimal(seq % 50000) / 100 + Decimal("1.00"),
            "GBP",
            "card",
            "invoice",
            f"INV-{seq}",
            f"dna-{seq:010d}",
            STATES[seq % 5],
            STATES[(seq + 1) % 5],
            "customer_request" if seq % 7 == 0 else "",
            "",
            "",
            "",
            f"req-{seq}",
            {"attempt": seq % 3, "channel": "terminal", "note": f"event {seq}"},
        ]
        digest = chain_hash(prev, values)
        values[-1] = Jsonb(values[-1])
        yield (*values, prev, digest)
        prev = digest


def _seed(total: int) -> list:
    group = PracticeGroup.objects.create(name="Bench group")
    practices = [
        Practice.objects.create(group=group, name=f"Bench practice {n}") for n in range(PRACTICES)
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    per_practice = total // PRACTICES
    heads = []
    with connection.cursor() as cursor:
        for index, practice in enumerate(practices):
            count = per_practice + (total % PRACTICES if index == 0 else 0)
            copy_sql = f"COPY audit_auditevent ({', '.join(COLUMNS)}) FROM STDIN"
            last_hash = GENESIS_HASH
            with cursor.cursor.copy(copy_sql) as copy:
                for row in _rows(practice.id, count, start):
                    copy.write_row(row)
                    last_hash = row[-1]
            heads.append(AuditChainHead(practice=practice, seq=count, last_hash=last_hash))
        AuditChainHead.objects.bulk_create(heads)
        cursor.execute("VACUUM ANALYZE audit_auditevent")
    return [p.id for p in practices]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def _baseline_copy(name: str) -> tuple[int, float]:
    """Bare PostgreSQL: the same rows, in the same order, as COPY text read by psycopg."""
    started = time.perf_counter()
    lines = 0
    with psycopg.connect(**conninfo(name)) as conn, conn.cursor() as cursor:
        sql = (
            f"COPY (SELECT {', '.join(COLUMNS)} FROM audit_auditevent "
            "ORDER BY practice_id, seq) TO STDOUT"
        )
        with cursor.copy(sql) as copy:
            for block in copy:
                lines += bytes(block).count(b"\n")
    return lines, time.perf_counter() - started


def _baseline_cursor(name: str) -> tuple[int, float]:
    """Bare psycopg: the same rows as Python tuples through a server-side cursor."""
    started = time.perf_counter()
    count = 0
    with (
        psycopg.connect(**conninfo(name)) as conn,
        conn.cursor(name="bench_audit_baseline") as cursor,
    ):
        cursor.itersize = 5000
        cursor.execute(
            f"SELECT {', '.join(COLUMNS)} FROM audit_auditevent ORDER BY practice_id, seq"
        )
        for _row in cursor:
            count += 1
    return count, time.perf_counter() - started


def _time_verify(workers: int) -> tuple[int, float, bool]:
    started = time.perf_counter()
    results = verify_all(workers=workers)
    elapsed = time.perf_counter() - started
    return sum(r.events_checked for r in results), elapsed, all(r.ok for r in results)


def _time_export(fmt: str) -> tuple[int, float]:
    started = time.perf_counter()
    size = 0
    for chunk in export_chunks(filtered_events(), fmt=fmt):
        size += len(chunk)
    return size, time.perf_counter() - started


# Run in the child: the command (or a bare django.setup()), then report the peak
# RSS of this process image. VmHWM, unlike ru_maxrss, does not inherit the
# parent's peak across fork + exec.
_PEAK_RSS = """
import os, sys
sys.argv = sys.argv[1:]
try:
    if sys.argv == ["--bare"]:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "primoro_payments.settings")
        import django
        django.setup()
    else:
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print(f"VmHWM_kB={peak}", file=sys.stderr)
"""


def _child(args: list[str], database_url: str) -> tuple[float, float]:
    """Run `manage.py <args>` (or ["--bare"]) in a fresh process; its peak RSS (MB) and wall time."""
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *(args if args == ["--bare"] else ["manage.py", *args])],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{args} failed: {done.stderr[-2000:]}")
    peak_kb = int(done.stderr.rsplit("VmHWM_kB=", 1)[1].split()[0])
    return peak_kb / 1024, elapsed


def main() -> None:
    total = int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000"))
    keep = os.environ.get("BENCH_AUDIT_KEEP_DB") == "1"
    reuse = os.environ.get("BENCH_AUDIT_REUSE_DB") == "1"
    with bench_database("bench_audit", migrate=not reuse, keep=keep, reuse=reuse) as name:
        if not reuse:
            started = time.perf_counter()
            _seed(total)
            print(f"seeded {total:,} events in {time.perf_counter() - started:.1f} s")
        total = filtered_events().count()
        print(f"database {name}: {total:,} events in {PRACTICES} practices")

        workers = os.cpu_count() or 1
        copy_n, copy_s = _baseline_copy(name)
        cur_n, cur_s = _baseline_cursor(name)
        ver1_n, ver1_s, ver1_ok = _time_verify(workers=1)
        verw_n, verw_s, verw_ok = _time_verify(workers=workers)
        jsonl_bytes, jsonl_s = _time_export("jsonl")
        csv_bytes, csv_s = _time_export("csv")
        connection.close()

        url = database_url(name)
        bare_mb, _ = _child(["--bare"], url)
        export = ["export_audit", "--output", os.devnull]
        jsonl_mb, jsonl_wall = _child([*export, "--format", "jsonl"], url)
        csv_mb, csv_wall = _child([*export, "--format", "csv"], url)
        cmd_mb, cmd_wall = _child(["verify_audit"], url)

        copy_rate = _rate(copy_n, copy_s)
        cur_rate = _rate(cur_n, cur_s)
        print()
        rows = [
            ("baseline: psycopg COPY text read", f"{copy_rate:,.0f} ev/s", "", ""),
            ("baseline: psycopg cursor, Python tuples", f"{cur_rate:,.0f} ev/s", "", ""),
        ]
        for label, count, seconds, ok in (
            ("verify_all, 1 process", ver1_n, ver1_s, ver1_ok),
            (f"verify_all, {workers} worker processes", verw_n, verw_s, verw_ok),
        ):
            rate = _rate(count, seconds)
            rows.append(
                (
                    f"{label} ({'chains OK' if ok else 'BROKEN'})",
                    f"{rate:,.0f} ev/s",
                    "cursor",
                    f"{rate / cur_rate:.2f}x; target >= 100,000 ev/s",
                )
            )
        for fmt, size, seconds in (("jsonl", jsonl_bytes, jsonl_s), ("csv", csv_bytes, csv_s)):
            rate = _rate(total, seconds)
            rows.append(
                (
                    f"export {fmt} ({size / 1e6:,.0f} MB)",
                    f"{rate:,.0f} ev/s",
                    "COPY",
                    f"{rate / copy_rate:.2f}x; target >= 50,000 ev/s",
                )
            )
        for label, mb, wall in (
            ("manage.py export_audit --format jsonl", jsonl_mb, jsonl_wall),
            ("manage.py export_audit --format csv", csv_mb, csv_wall),
            ("manage.py verify_audit", cmd_mb, cmd_wall),
        ):
            rows.append(
                (
                    f"{label}: peak RSS, {wall:.1f} s wall",
                    f"{mb:,.0f} MB",
                    f"{bare_mb:,.0f} MB bare django.setup()",
                    f"+{mb - bare_mb:,.0f} MB; target < 200 MB",
                )
            )
        print_table(rows)


if __name__ == "__main__":
    main()
