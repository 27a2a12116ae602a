"""Payment Drawer: the provider's answer → the outcome on the staff member's screen.

Run: `make bench BENCH_ARGS=drawer` or `python -m benchmarks bench_drawer`.

What runs, all on this machine: gunicorn (2 sync workers) and a Celery worker
serving the project on a fresh bench database and a redis-server of its own,
the DNA simulator (in this process), and Debian's Chromium driven by
Playwright (headless, as `make test-browser` runs it). The app runs with
DEBUG on because the browser signs in over plain HTTP (production cookies are
HTTPS-only); everything else is as in production.

A staff member signs in, and BENCH_DRAWER_ROUNDS times (default 20) takes a
terminal payment in the Payment Drawer: the amount goes to the simulator's
terminal, the payment page shows "Awaiting customer action", the patient
approves on the terminal, and the clock runs until "Captured" is on the
screen, with no reload. It prints p50 / p95 / max of that, beside the part
spent on the server (the terminal's webhook stored → processed, from the
database's clocks) and the page's poll interval, which bounds the rest.
Target (TARGETS.md): the outcome on screen in < 1 s. Figures are printed,
never asserted.
"""

from __future__ import annotations

import os
import secrets
import time

from django.contrib.auth.models import User

from benchmarks.common import (
    bench_database,
    bench_practice,
    celery_worker,
    database_url,
    free_port,
    gunicorn,
    pcts,
    percentile,
    print_table,
    private_redis,
)
from integrations.models import WebhookEvent
from integrations.simulators import dna as dna_sim
from payments.models import Payment, PaymentState
from practices.models import Patient
from terminals.models import Terminal

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TID = "BENCHDRAWER01"
POLL_SECONDS = 0.5  # templates/portal/_status_text.html polls every 500 ms while live


def _world(password: str) -> tuple[User, Patient]:
    world = bench_practice("Bench drawer", username="bench_reception", password=password)
    Terminal.objects.create(
        practice=world.practice, site=world.site, label="Desk", kind="countertop", tid=TID
    )
    return world.user, world.patient


def _sign_in(page, base: str, user: User, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def _wait_for_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text],
        polling=10,
    )


def _one_payment(page, base: str, patient: Patient, n: int) -> Payment:
    """Take terminal payment `n` in the drawer; returns it once the page says it waits."""
    page.goto(f"{base}/patients/{patient.id}/pay/")
    page.fill("#id_target_id", f"INV-DRAWER-{n}")
    page.fill("#id_amount", "42.00")
    page.check("input[name=method][value=terminal]")
    page.select_option("#id_terminal", index=1)  # the site's only terminal, after the blank
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/payments/*/")
    _wait_for_text(page, "#status-panel", "waiting for the patient")
    return Payment.objects.get(target_id=f"INV-DRAWER-{n}")


def main() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise SystemExit(f"bench_drawer needs Chromium at {CHROMIUM} (apt-get install chromium).")
    import httpx
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # ORM reads between browser steps
    rounds = int(os.environ.get("BENCH_DRAWER_ROUNDS", "20"))
    password = secrets.token_urlsafe(16)
    client_secret, webhook_secret, api_key = (secrets.token_urlsafe(24) for _ in range(3))
    config = dna_sim.DnaConfig(
        client_id="bench-drawer",
        client_secret=client_secret,
        terminal_webhook_secret=webhook_secret,
        terminal_webhook_key_id="bench-drawer-key",
        terminal_api_key=api_key,
        terminals=(TID,),
    )
    sim_url, stop_sim = dna_sim.serve_in_thread(0, config=config)
    port = free_port()
    on_screen: list[float] = []
    server: list[float] = []
    try:
        with (
            bench_database("bench_drawer") as name,
            private_redis() as redis_url,
            httpx.Client(timeout=15) as http,
        ):
            user, patient = _world(password)
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "primoro_payments.settings",
                "DEBUG": "true",
                "DATABASE_URL": database_url(name),
                "REDIS_URL": redis_url,
                "CELERY_TASK_ALWAYS_EAGER": "false",
                "LOG_LEVEL": "WARNING",
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "DNA_OAUTH_URL": sim_url,
                "DNA_API_URL": sim_url,
                "DNA_PAY_URL": sim_url,
                "DNA_AXEPT_URL": f"{sim_url}/axept",
                "DNA_CLIENT_ID": "bench-drawer",
                "DNA_CLIENT_SECRET": client_secret,
                "DNA_TERMINAL_WEBHOOK_SECRET": webhook_secret,
                "DNA_TERMINAL_WEBHOOK_KEY_ID": "bench-drawer-key",
                "DNA_TERMINAL_API_KEY": api_key,
            }
            with (
                gunicorn(
                    "primoro_payments.wsgi:application", env=env, workers=2, port=port
                ) as base,
                celery_worker(env=env, queues="webhooks,outbox,writeback,default"),
                sync_playwright() as playwright,
            ):
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(30_000)
                _sign_in(page, base, user, password)
                print(f"gunicorn 2 workers, Celery 2 processes, Chromium; {rounds} payments")
                for n in range(rounds + 1):  # the first one warms every process up
                    payment = _one_payment(page, base, patient, n)
                    started = time.monotonic()
                    answer = http.post(
                        f"{sim_url}/axept/terminals/{TID}/action", json={"action": "approve"}
                    )
                    answer.raise_for_status()
                    _wait_for_text(page, "#status-panel .live-status", "Captured")
                    elapsed = time.monotonic() - started
                    payment.refresh_from_db()
                    assert payment.state == PaymentState.CAPTURED, payment.state
                    if n:
                        on_screen.append(elapsed)
                        event = WebhookEvent.objects.get(payment_id=payment.id)
                        server.append((event.processed_at - event.received_at).total_seconds())
                browser.close()
    finally:
        stop_sim()

    rows = [
        (
            "provider's answer → 'Captured' on screen (p50 / p95 / p99)",
            pcts(on_screen),
            f"max {max(on_screen) * 1000:,.0f} ms",
            f"p95 {'OK' if percentile(on_screen, 95) < 1 else 'OVER'}: target < 1 s",
        ),
        ("  of which on the server: webhook stored → processed", pcts(server), "", ""),
        ("  the page's poll interval (bounds the browser's part)", f"{POLL_SECONDS:.1f} s", "", ""),
    ]
    print_table(rows, headers=("measure", "p50 / p95 / p99", "", "target"))
    print(f"{len(on_screen)} terminal payments captured on screen (after one to warm up)")


if __name__ == "__main__":
    main()
