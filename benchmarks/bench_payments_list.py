"""The staff payments list on a large table: every §13.4 filter, page 1 and the next page.

Run: `make bench BENCH_ARGS=payments_list` or `python -m benchmarks bench_payments_list`.

A bench database (`<configured>_bench_list`) is migrated and seeded with
BENCH_LIST_PAYMENTS payments (default 1,000,000; TARGETS.md's figure) in one
server-side INSERT ... SELECT (secondary indexes dropped first and rebuilt
after, as a bulk load would; this is setup, not the path measured): four
practices of one group (55 % of the rows in the first), three sites each,
twelve staff each, 20,000 patients each, two years of history, realistic mixes
of methods, states, billable targets, exceptions and amounts.

For each filter, `payments.selectors.payments_page(user, PaymentFilters(...))`
runs BENCH_LIST_RUNS times (default 20) for page 1 and for the next page (its
cursor), each time for a freshly loaded user as a request would have, and the
p50 / p95 and the number of SQL queries per page are printed. Most filters run
as a finance admin of the large practice (all sites); a few as a reception
member of one site and as a group operator (all four practices). Then the
same list through the portal view over HTTP (gunicorn, 2 workers, a signed-in
session) for a few filters.

Baseline: psycopg, `SELECT * FROM payments_payment WHERE practice_id = %s
ORDER BY created_at DESC LIMIT 50`, the cheapest indexed page the table allows.
Target (TARGETS.md): p95 < 100 ms for every filter, a constant query count per
page. Set BENCH_LIST_KEEP_DB=1 to keep the seeded database and
BENCH_LIST_REUSE_DB=1 to measure it again without seeding.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
import psycopg
from django.contrib.auth.models import Group, User
from django.db import connection, connections, reset_queries
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from benchmarks.common import (
    bench_database,
    conninfo,
    database_url,
    gunicorn,
    percentile,
    print_table,
)
from payments.models import Payment
from payments.selectors import PaymentFilters, payments_page
from practices.models import Patient, Practice, PracticeGroup, Site, StaffProfile
from practices.roles import Role
from terminals.models import Terminal

PRACTICES = 4
SITES = 3
STAFF = 12
PATIENTS = 20_000
FIRST_NAMES = [
    "Ada", "Alan", "Amara", "Ben", "Chloe", "Dev", "Ellis", "Fatima", "Grace", "Harry",
    "Isla", "Jack", "Kai", "Leah", "Mia", "Noah", "Olivia", "Priya", "Quinn", "Ravi",
    "Sofia", "Tom", "Uma", "Vik", "Wren", "Yusuf", "Zara", "Oscar", "Ruby", "Theo",
]  # fmt: skip
SURNAMES = [
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Wood", "Jackson", "Clarke", "Khan", "Lewis", "Hughes", "Edwards", "Turner", "Hill",
]  # fmt: skip
RARE_NAME = "Zebedee"  # 1 patient in 4,000


# --- Seeding -------------------------------------------------------------------------------------


def _world() -> dict:
    group = PracticeGroup.objects.create(name="Bench list group")
    world = {"practices": [], "sites": [], "terminals": [], "staff": [], "group": group}
    roles = {r: Group.objects.get(name=r.value) for r in Role}
    for p in range(PRACTICES):
        practice = Practice.objects.create(group=group, name=f"Bench practice {p}")
        world["practices"].append(practice)
        for s in range(SITES):
            site = Site.objects.create(practice=practice, name=f"P{p} site {s}")
            world["sites"].append(site)
            world["terminals"].append(
                Terminal.objects.create(
                    practice=practice, site=site, label="Desk", kind="countertop", tid=f"B{p}{s}"
                )
            )
        for n in range(STAFF):
            user = User.objects.create_user(
                username=f"p{p}-staff{n}", first_name="Sam", last_name=f"Staff{n}"
            )
            user.groups.set([roles[Role.RECEPTION]])
            StaffProfile.objects.create(user=user, practice=practice, all_sites=True)
            world["staff"].append(user)

    def person(username, role, **profile):
        user = User.objects.create_user(username=username, password="bench-list-password-1")
        user.groups.set([roles[role]])
        StaffProfile.objects.create(user=user, **profile)
        return user

    big = world["practices"][0]
    world["finance"] = person("finance", Role.FINANCE_ADMIN, practice=big, all_sites=True)
    reception = person("reception", Role.RECEPTION, practice=big)
    reception.staff_profile.sites.set([world["sites"][1]])
    world["reception"] = reception
    world["operator"] = person("operator", Role.GROUP_OPERATOR, practice_group=group)
    return world


def _seed_patients(cursor, world) -> None:
    first = "ARRAY[" + ",".join(f"'{n}'" for n in FIRST_NAMES) + "]"
    last = "ARRAY[" + ",".join(f"'{n}'" for n in SURNAMES) + "]"
    for index, practice in enumerate(world["practices"]):
        cursor.execute(
            f"""
            INSERT INTO practices_patient
                (id, practice_id, kind, pms_patient_id, display_name, email, phone, created_at)
            SELECT gen_random_uuid(), %(practice)s, 'patient', 'PMS-' || %(p)s || '-' || n,
                   CASE WHEN n %% 4000 = 7 THEN '{RARE_NAME} ' || n
                        ELSE ({first})[1 + (n * 7919) %% {len(FIRST_NAMES)}] || ' '
                             || ({last})[1 + (n * 104729) %% {len(SURNAMES)}] END,
                   '', '', now()
            FROM generate_series(1, {PATIENTS}) AS n
            """,
            {"practice": practice.id, "p": index},
        )
    cursor.execute(
        """
        CREATE TEMP TABLE bench_patient AS
        SELECT p.id, pr.idx, row_number() OVER (PARTITION BY p.practice_id ORDER BY p.id) AS n
        FROM practices_patient p
        JOIN unnest(%s::uuid[]) WITH ORDINALITY AS pr(practice_id, idx) USING (practice_id)
        """,
        [[p.id for p in world["practices"]]],
    )
    cursor.execute("CREATE INDEX ON bench_patient (idx, n)")
    cursor.execute("ANALYZE bench_patient")


# One row per payment; r_* are independent uniform draws that pick each attribute.
PAYMENTS_SQL = f"""
INSERT INTO payments_payment (
    id, practice_id, site_id, terminal_id, patient_id, purpose, target_type, target_id,
    pms_invoice_ref, method, amount, currency, rewards_credit_reference, captured_amount,
    refunded_amount, state, provider, provider_reference, payment_mandate_ref,
    payment_profile_id, moto, initiated_by_kind, initiated_by_user_id, initiated_by_label,
    failure_code, failure_reason, void_reason_code, disputed, pms_writeback_status,
    created_at, updated_at, captured_at, failed_at)
SELECT
    gen_random_uuid(), (%(practices)s::uuid[])[pi], (%(sites)s::uuid[])[(pi - 1) * {SITES} + si],
    CASE WHEN method = 'terminal' THEN (%(terminals)s::uuid[])[(pi - 1) * {SITES} + si] END,
    bp.id, 'patient', target_type, 'INV-' || i,
    CASE WHEN target_type = 'invoice' THEN 'INV-' || i ELSE '' END,
    method, amount, 'GBP', '',
    CASE WHEN paid THEN amount ELSE 0 END,
    CASE WHEN state = 'refunded' THEN amount
         WHEN state = 'partially_refunded' THEN round(amount / 2, 2) ELSE 0 END,
    state,
    CASE WHEN method IN ('cash', 'voucher') THEN '' ELSE 'dna' END,
    CASE WHEN method IN ('cash', 'voucher') THEN '' ELSE 'dna-' || lpad(i::text, 10, '0') END,
    '', '', method = 'virtual_terminal',
    CASE WHEN r_u < 0.8 THEN 'staff' ELSE 'patient' END,
    CASE WHEN r_u < 0.8 THEN (%(staff)s::int[])[(pi - 1) * {STAFF} + 1 + floor(r_u / 0.8 * {STAFF})::int] END,
    CASE WHEN r_u < 0.8 THEN 'Sam Staff' ELSE 'Patient (self-serve)' END,
    CASE WHEN state = 'failed' THEN 'declined' ELSE '' END,
    CASE WHEN state = 'failed' THEN 'The card payment was declined.' ELSE '' END,
    CASE WHEN state = 'voided' THEN 'patient_request' ELSE '' END,
    paid AND r_x < 0.002,
    CASE WHEN NOT paid THEN 'not_due' WHEN r_w < 0.005 THEN 'pending'
         WHEN r_w < 0.007 THEN 'fallback' ELSE 'written' END,
    created_at, created_at + interval '40 seconds',
    CASE WHEN paid THEN created_at + interval '40 seconds' END,
    CASE WHEN state = 'failed' THEN created_at + interval '40 seconds' END
FROM (
    SELECT *, state IN ('captured', 'partially_refunded', 'refunded', 'reconciled') AS paid
    FROM (
        SELECT i, r_u, r_w, r_x,
            CASE WHEN r_p < 0.55 THEN 1 WHEN r_p < 0.70 THEN 2 WHEN r_p < 0.85 THEN 3 ELSE 4 END AS pi,
            CASE WHEN r_s < 0.6 THEN 1 WHEN r_s < 0.9 THEN 2 ELSE 3 END AS si,
            1 + floor(r_n * {PATIENTS})::int AS patient_n,
            CASE WHEN r_m < 0.45 THEN 'terminal' WHEN r_m < 0.65 THEN 'online'
                 WHEN r_m < 0.80 THEN 'pay_by_link' WHEN r_m < 0.85 THEN 'virtual_terminal'
                 WHEN r_m < 0.93 THEN 'cash' WHEN r_m < 0.95 THEN 'voucher'
                 ELSE 'card_on_file' END AS method,
            CASE WHEN r_st < 0.50 THEN 'captured' WHEN r_st < 0.70 THEN 'reconciled'
                 WHEN r_st < 0.76 THEN 'failed' WHEN r_st < 0.79 THEN 'refunded'
                 WHEN r_st < 0.82 THEN 'partially_refunded' WHEN r_st < 0.85 THEN 'voided'
                 WHEN r_st < 0.90 THEN 'awaiting_customer_action'
                 WHEN r_st < 0.94 THEN 'initiated' WHEN r_st < 0.97 THEN 'authorised'
                 ELSE 'proposed' END AS state,
            CASE WHEN r_t < 0.60 THEN 'invoice' WHEN r_t < 0.75 THEN 'patient_balance'
                 WHEN r_t < 0.85 THEN 'deposit' WHEN r_t < 0.95 THEN 'payment_request'
                 ELSE 'commerce_order' END AS target_type,
            round((5 + r_a * 1995)::numeric, 2) AS amount,
            %(start)s::timestamptz + (i::float8 / %(total)s) * interval '730 days'
                + r_x * interval '50 seconds' AS created_at
        FROM (
            SELECT i, random() AS r_p, random() AS r_s, random() AS r_n, random() AS r_m,
                   random() AS r_st, random() AS r_t, random() AS r_a, random() AS r_u,
                   random() AS r_w, random() AS r_x
            FROM generate_series(1, %(total)s) AS i
        ) AS draws
    ) AS picked
) AS p
JOIN bench_patient bp ON bp.idx = p.pi AND bp.n = p.patient_n
"""


def _seed(total: int) -> dict:
    world = _world()
    with connection.cursor() as cursor:
        _seed_patients(cursor, world)
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'payments_payment' "
            "AND indexname <> 'payments_payment_pkey'"
        )
        indexes = cursor.fetchall()
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SELECT setseed(0.2026)")
        cursor.execute("SET session_replication_role = replica")  # bulk load: skip FK triggers
        cursor.execute(
            PAYMENTS_SQL,
            {
                "practices": [p.id for p in world["practices"]],
                "sites": [s.id for s in world["sites"]],
                "terminals": [t.id for t in world["terminals"]],
                "staff": [u.id for u in world["staff"]],
                "total": total,
                "start": timezone.now() - timedelta(days=730),
            },
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for _name, definition in indexes:
            cursor.execute(definition)
        cursor.execute("VACUUM ANALYZE payments_payment")
        cursor.execute("VACUUM ANALYZE practices_patient")
    return world


def _load_world() -> dict:
    group = PracticeGroup.objects.get(name="Bench list group")
    practices = list(Practice.objects.filter(group=group).order_by("name"))
    return {
        "group": group,
        "practices": practices,
        "sites": list(Site.objects.filter(practice__in=practices).order_by("name")),
        "staff": list(User.objects.filter(username__startswith="p0-staff").order_by("id")),
        "finance": User.objects.get(username="finance"),
        "reception": User.objects.get(username="reception"),
        "operator": User.objects.get(username="operator"),
    }


# --- Measuring ------------------------------------------------------------------------------------


@dataclass
class Measure:
    label: str
    first: list[float]
    second: list[float]
    queries: tuple[int, int]
    rows: int

    def cell(self, samples: list[float]) -> str:
        return f"{percentile(samples, 50) * 1000:,.1f} / {percentile(samples, 95) * 1000:,.1f}"


def _fresh(user: User) -> User:
    """The user as a request loads it: nothing cached from an earlier call."""
    return User.objects.select_related("staff_profile").get(pk=user.pk)


def _measure(label: str, user: User, filters: PaymentFilters, runs: int) -> Measure:
    first_page = payments_page(_fresh(user), filters)
    cursor = first_page.next_cursor
    first, second = [], []
    for _ in range(runs):
        fresh = _fresh(user)
        started = time.perf_counter()
        page = payments_page(fresh, filters)
        first.append(time.perf_counter() - started)
        if cursor:
            fresh = _fresh(user)
            started = time.perf_counter()
            payments_page(fresh, filters, cursor=cursor)
            second.append(time.perf_counter() - started)
    counts = []
    for page_cursor in (None, cursor):
        fresh = _fresh(user)
        reset_queries()  # DEBUG keeps only the last 9,000 queries; capture from an empty log
        with CaptureQueriesContext(connection) as queries:
            payments_page(fresh, filters, cursor=page_cursor)
        counts.append(len(queries))
    return Measure(label, first, second, (counts[0], counts[1]), len(page.rows))


def _deep(label: str, user: User, filters: PaymentFilters, runs: int, depth: int = 20) -> Measure:
    """Page `depth + 1`, reached by following `depth` cursors (keyset: no OFFSET to pay for)."""
    cursor = None
    for _ in range(depth):
        cursor = payments_page(_fresh(user), filters, cursor=cursor).next_cursor
    samples = []
    for _ in range(runs):
        fresh = _fresh(user)
        started = time.perf_counter()
        page = payments_page(fresh, filters, cursor=cursor)
        samples.append(time.perf_counter() - started)
    fresh = _fresh(user)
    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        payments_page(fresh, filters, cursor=cursor)
    return Measure(label, samples, [], (len(queries), len(queries)), len(page.rows))


def _cases(world: dict) -> list[tuple[str, User, PaymentFilters]]:
    finance, reception, operator = world["finance"], world["reception"], world["operator"]
    today = timezone.localdate()
    small_site = world["sites"][2]  # practice 0's third site: 10 % of its payments
    staff = world["staff"][3]
    year_ago = today - timedelta(days=365)
    F = PaymentFilters
    return [
        ("no filter, newest first", finance, F()),
        ("date range: last 30 days", finance, F(date_from=today - timedelta(days=30))),
        ("date range: one month a year ago", finance, F(date_from=year_ago, date_to=year_ago + timedelta(days=30))),
        ("site (10% of the practice)", finance, F(site_id=small_site.id)),
        ("staff member", finance, F(staff_id=staff.id)),
        ("method: terminal", finance, F(method="terminal")),
        ("method: voucher (2%)", finance, F(method="voucher")),
        ("state: captured", finance, F(state="captured")),
        ("state: authorised (3%)", finance, F(state="authorised")),
        ("target type: commerce order (5%)", finance, F(target_type="commerce_order")),
        ("exception: failed", finance, F(exception="failed")),
        ("exception: disputed (0.1%)", finance, F(exception="disputed")),
        ("exception: pending reconciliation", finance, F(exception="pending_reconciliation")),
        ("exception: pending PMS writeback (0.5%)", finance, F(exception="pending_pms_writeback")),
        ("search: patient name prefix 'Gra'", finance, F(q="Gra")),
        (f"search: rare patient name '{RARE_NAME}'", finance, F(q=RARE_NAME)),
        ("search: invoice reference", finance, F(q="INV-500000")),
        ("sort: amount, largest first", finance, F(sort="amount_high")),
        ("sort: amount, smallest first", finance, F(sort="amount_low")),
        ("combined: site + state + 90 days", finance, F(site_id=small_site.id, state="captured", date_from=today - timedelta(days=90))),
        ("reception, one site: newest", reception, F()),
        ("reception, one site: failed", reception, F(exception="failed")),
        ("group operator, 4 practices: newest", operator, F()),
        ("group operator: amount, largest first", operator, F(sort="amount_high")),
        ("group operator: patient name 'Gra'", operator, F(q="Gra")),
        ("group operator: pending PMS writeback", operator, F(exception="pending_pms_writeback")),
    ]  # fmt: skip


def _baseline(name: str, practice_id, runs: int) -> list[float]:
    samples = []
    with psycopg.connect(**conninfo(name)) as conn, conn.cursor() as cursor:
        sql = (
            "SELECT * FROM payments_payment WHERE practice_id = %s "
            "ORDER BY created_at DESC LIMIT 50"
        )
        cursor.execute(sql, [practice_id])
        for _ in range(runs):
            started = time.perf_counter()
            cursor.execute(sql, [practice_id])
            cursor.fetchall()
            samples.append(time.perf_counter() - started)
    return samples


def _over_http(name: str, user: User, runs: int) -> list[tuple[str, list[float], int]]:
    """The portal's list page, rendered by gunicorn, for a signed-in finance admin."""
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "primoro_payments.settings",
        "DEBUG": "true",
        "DATABASE_URL": database_url(name),
        "LOG_LEVEL": "WARNING",
    }
    today = timezone.localdate()
    queries = [
        ("portal /payments/ newest first", ""),
        ("portal /payments/ failed, last 90 days", f"exception=failed&date_from={today - timedelta(days=90)}"),
        ("portal /payments/ amount, largest first", "sort=amount_high"),
        ("portal /payments/ patient name 'Gra'", "q=Gra"),
    ]  # fmt: skip
    results = []
    with (
        gunicorn("primoro_payments.wsgi:application", env=env, workers=2) as base,
        httpx.Client(base_url=base, cookies={"sessionid": session}, timeout=30) as http,
    ):
        for label, query in queries:
            url = f"/payments/?{query}"
            status = http.get(url).status_code  # warm
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                status = http.get(url).status_code
                samples.append(time.perf_counter() - started)
            results.append((label, samples, status))
    return results


def main() -> None:
    total = int(os.environ.get("BENCH_LIST_PAYMENTS", "1000000"))
    runs = int(os.environ.get("BENCH_LIST_RUNS", "20"))
    keep = os.environ.get("BENCH_LIST_KEEP_DB") == "1"
    reuse = os.environ.get("BENCH_LIST_REUSE_DB") == "1"
    with bench_database("bench_list", keep=keep, reuse=reuse) as name:
        if reuse:
            world = _load_world()
        else:
            started = time.perf_counter()
            world = _seed(total)
            print(f"seeded {total:,} payments in {time.perf_counter() - started:.1f} s")
        total = Payment.objects.count()
        big = Payment.objects.filter(practice=world["practices"][0]).count()
        patients = Patient.objects.count()
        print(
            f"database {name}: {total:,} payments ({big:,} in the finance admin's practice), "
            f"{patients:,} patients; {runs} runs per measure"
        )
        baseline = _baseline(name, world["practices"][0].id, runs * 2)
        base_p95 = percentile(baseline, 95)
        measures = [_measure(label, user, f, runs) for label, user, f in _cases(world)]
        finance = world["finance"]
        measures += [
            _deep("page 21, newest first", finance, PaymentFilters(), runs),
            _deep(
                "page 21, amount, largest first", finance, PaymentFilters(sort="amount_high"), runs
            ),
        ]
        connections.close_all()
        http = _over_http(name, world["finance"], runs)

    rows = [
        (
            "baseline: raw indexed SELECT ... ORDER BY created_at DESC LIMIT 50",
            f"{percentile(baseline, 50) * 1000:,.1f} / {base_p95 * 1000:,.1f}",
            "",
            "",
            "",
        )
    ]
    for m in measures:
        worst = max(percentile(m.first, 95), percentile(m.second, 95) if m.second else 0)
        rows.append(
            (
                f"{m.label} ({m.rows} rows)",
                m.cell(m.first),
                m.cell(m.second) if m.second else "(one page)",
                f"{m.queries[0]} / {m.queries[1]}",
                f"{worst / base_p95:,.1f}x; {'OK' if worst < 0.1 else 'OVER'} (< 100 ms)",
            )
        )
    for label, samples, status in http:
        rows.append(
            (
                f"{label} (HTTP {status})",
                f"{percentile(samples, 50) * 1000:,.1f} / {percentile(samples, 95) * 1000:,.1f}",
                "",
                "",
                f"median {statistics.median(samples) / base_p95:,.1f}x baseline p95",
            )
        )
    print_table(
        rows,
        headers=(
            "measure",
            "page 1 p50 / p95 ms",
            "next page p50 / p95 ms",
            "queries p1 / p2",
            "p95 vs baseline; target",
        ),
    )
    print("(Shared 2-core machine: other work running at the same time makes these figures noisy.)")
