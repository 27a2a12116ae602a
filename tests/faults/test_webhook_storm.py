"""Every webhook and module trigger delivered three times at once, out of order, to gunicorn.

Invariant: 0 doubled state changes and 0 lost events, up to what the other
modules and the PMS receive. Each distinct provider event is stored once and
processed once; each card payment is captured exactly once (one capture audit
event, one PMS writeback, one Financial Signal) whether its authorisation or
its charge arrived first; each Direct Debit payment ends in the newest status
GoCardless reported, registered once, with one "received" Financial Signal,
and no GoCardless event is applied twice; each Appointment Manager deposit
request (a signed inbound trigger) creates one deposit and one payment link,
sent once. Every resulting outbox row is delivered to its consumer in exactly
one POST: nothing here loses a relay's outcome, so nothing may be sent twice.

The app runs as in production: gunicorn with the project's config (three sync
workers, so the copies of a delivery really race for the unique constraints
and row locks in separate processes) and a prefork Celery worker (three pool
processes, beat embedded: its sweeps race the tasks for the same events and
outbox rows) on the test database and a redis-server of our own.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.inbound.models import InboundEvent
from integrations.models import Destination, OutboxMessage, WebhookEvent
from integrations.signing import request_headers
from integrations.simulators import signing
from payments import services
from payments.models import Deposit, Payment, PaymentMethod, PaymentState, TargetType
from subscriptions.models import SubscriptionPayment
from tests.factories import TerminalFactory
from tests.faults.conftest import (
    assert_delivered,
    assert_once,
    endpoint_env,
    module_rows,
    pms_rows,
)
from tests.faults.processes import (
    app_env,
    celery_worker,
    free_port,
    gunicorn,
    redis_server,
    wait_until,
)
from tests.providers.conftest import (
    CLIENT_SECRET,
    TERMINAL_KEY_ID,
    TERMINAL_SECRET,
    json_body,
    signed_callback,
)
from tests.subscriptions.conftest import SECRET as GC_SECRET
from tests.subscriptions.conftest import TOKEN as GC_TOKEN
from tests.subscriptions.conftest import gc_event, publish, scenario, signed

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

S = PaymentState
COPIES = 3
ONLINE, TERMINALS, DIRECT_DEBITS, DEPOSITS = 8, 4, 3, 4
INBOUND_SECRET = "faults-storm-appointment-manager-secret-0123456789"


def _online(actor, practice, site, patient, n):
    payment = services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=f"INV-ON-{n}",
        amount="60.00",
        method=PaymentMethod.ONLINE,
    )
    services.payment_await_customer(payment_id=payment.id, actor=actor)
    return payment


def _on_terminal(actor, practice, site, patient, n):
    terminal = TerminalFactory(site=site, practice=practice)
    payment = services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=f"INV-T-{n}",
        amount="85.00",
        method=PaymentMethod.TERMINAL,
        terminal=terminal,
    )
    services.payment_await_customer(payment_id=payment.id, actor=actor)
    return payment, terminal


def _terminal_delivery(base_url: str, payment: Payment, tid: str) -> tuple[str, bytes, dict]:
    body = json_body(
        {
            "uti": str(payment.id),
            "tid": tid,
            "status": "approved",
            "transactionId": str(uuid.uuid4()),
            "amount": Decimal("85"),
            "currency": "GBP",
            "reference": payment.id.hex,
            "authCode": "ABCDEF",
            "rrn": "123456789012",
            "errorCode": 0,
            "message": "Approved",
            "paymentMethod": "card",
            "cardSchemeName": "VISA",
            "cardPanStarred": "4242********4242",
            "timestamp": timezone.now().isoformat(),
        }
    )
    path = "/webhooks/dna/terminal/"
    headers = signing.http_message_signature(
        method="POST",
        target_uri=f"{base_url}{path}",
        body=body,
        secret=TERMINAL_SECRET,
        keyid=TERMINAL_KEY_ID,
        created=int(time.time()),
    )
    return path, body, {"Content-Type": "application/json", **headers}


def _gocardless_deliveries(gc_api, practice, patient, n) -> tuple[list, str]:
    """A paid-out Direct Debit payment: its older events, the newest and the payout, as webhooks."""
    built = scenario("payment_paid_out", practice, patient, subscription_id=f"CP-{n}")
    publish(gc_api, built)
    paid_out, payout_paid = built.events
    payment_id = paid_out["links"]["payment"]
    at = timezone.now() - timedelta(minutes=10)
    older = [
        gc_event(action, links={"payment": payment_id}, at=at + timedelta(minutes=i))
        for i, action in enumerate(("created", "submitted", "confirmed"))
    ]
    webhooks = [[e] for e in (*older, paid_out, payout_paid)] + [[older[1], paid_out]]
    deliveries = []
    for events in webhooks:
        body, signature = signed(events)
        deliveries.append(
            (
                "/webhooks/gocardless/",
                body,
                {"Content-Type": "application/json", "Webhook-Signature": signature},
            )
        )
    return deliveries, payment_id


def _deposit_requests(practice, site, patient) -> list:
    """Appointment Manager asking for a deposit per appointment, signed as integrations.signing signs."""
    deliveries = []
    for n in range(DEPOSITS):
        body = json.dumps(
            {
                "practice_id": str(practice.id),
                "site_id": str(site.id),
                "patient_id": str(patient.id),
                "appointment_id": f"APT-STORM-{n}",
                "amount": "75.00",
                "channel": "sms",
            }
        ).encode()
        headers = request_headers(INBOUND_SECRET, body, event_id=f"am-storm-{uuid.uuid4()}")
        deliveries.append(("/api/v1/inbound/appointment_manager/deposit_requested/", body, headers))
    return deliveries


def _storm(base_url: str, deliveries: list, seed: int) -> list[int]:
    """Each delivery sent COPIES times at the same instant; deliveries shuffled, four at a time."""
    order = list(deliveries)
    random.Random(seed).shuffle(order)
    statuses: list[int] = []
    lock = threading.Lock()

    def copies(delivery) -> None:
        path, body, headers = delivery
        start = threading.Barrier(COPIES)

        def one() -> None:
            start.wait(timeout=10)
            answer = httpx.post(f"{base_url}{path}", content=body, headers=headers, timeout=30)
            with lock:
                statuses.append(answer.status_code)

        threads = [threading.Thread(target=one) for _ in range(COPIES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(copies, order))
    return statuses


def _settled(events: int) -> bool:
    return (
        WebhookEvent.objects.filter(status="processed").count() == events
        and OutboxMessage.objects.exists()
        and not OutboxMessage.objects.exclude(status=OutboxMessage.Status.DELIVERED).exists()
    )


def test_each_webhook_and_trigger_three_times_at_once_out_of_order_changes_everything_once(
    gc_api, sink, pms_sim, fast_relay_env, reception_actor, practice, site, patient
):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    online = [_online(reception_actor, practice, site, patient, n) for n in range(ONLINE)]
    on_terminals = [
        _on_terminal(reception_actor, practice, site, patient, n) for n in range(TERMINALS)
    ]
    deliveries = []
    for payment in online:
        txn = str(uuid.uuid4())  # authorised, then charged: the same transaction, either order
        for settled in (False, True):
            body = json_body(
                signed_callback(
                    invoice_id=str(payment.id),
                    amount=Decimal("60"),
                    transaction_id=txn,
                    settled=settled,
                )
            )
            deliveries.append(("/webhooks/dna/", body, {"Content-Type": "application/json"}))
    for payment, terminal in on_terminals:
        deliveries.append(_terminal_delivery(base_url, payment, terminal.tid))
    direct_debits = []
    for n in range(DIRECT_DEBITS):
        gc_deliveries, gc_payment_id = _gocardless_deliveries(gc_api, practice, patient, n)
        deliveries += gc_deliveries
        direct_debits.append(gc_payment_id)
    deliveries += _deposit_requests(practice, site, patient)
    distinct_gc_events = DIRECT_DEBITS * 5
    provider_events = 2 * ONLINE + TERMINALS + distinct_gc_events

    with redis_server() as redis:
        env = app_env(
            redis_url=redis.url,
            PUBLIC_BASE_URL=base_url,  # what DNA signs the terminal webhook's @target-uri with
            DNA_CLIENT_SECRET=CLIENT_SECRET,
            DNA_TERMINAL_WEBHOOK_SECRET=TERMINAL_SECRET,
            DNA_TERMINAL_WEBHOOK_KEY_ID=TERMINAL_KEY_ID,
            GOCARDLESS_API_URL=gc_api,
            GOCARDLESS_ACCESS_TOKEN=GC_TOKEN,
            GOCARDLESS_WEBHOOK_SECRET=GC_SECRET,
            INBOUND_APPOINTMENT_MANAGER_SECRET=INBOUND_SECRET,
            **endpoint_env(sink.url, pms_sim.url),
            **fast_relay_env,
        )
        with (
            gunicorn(env, workers=3, port=port),
            celery_worker(env, concurrency=3, beat=True) as worker,
        ):
            statuses = _storm(base_url, deliveries, seed=2026)
            settled = wait_until(lambda: _settled(provider_events), timeout=60, interval=0.25)
            assert settled, (
                f"{Counter(WebhookEvent.objects.values_list('status', flat=True))} "
                f"{Counter(OutboxMessage.objects.values_list('status', flat=True))}\n"
                + worker.output()
            )

    # Nothing refused, nothing lost: every copy answered 2xx, every distinct event stored once
    # and processed in one attempt (a copy or a sweep that lost the race changed nothing).
    assert len(statuses) == COPIES * len(deliveries)
    assert {code // 100 for code in statuses} == {2}
    stored = Counter(WebhookEvent.objects.values_list("provider", flat=True))
    assert stored == {
        "dna": 2 * ONLINE,
        "dna_terminal": TERMINALS,
        "gocardless": distinct_gc_events,
    }
    assert set(WebhookEvent.objects.values_list("status", "attempts")) == {("processed", 1)}

    # Card payments: captured once each, one writeback and one Financial Signal each.
    card_payments = [p.id for p in online] + [p.id for p, _ in on_terminals]
    assert set(Payment.objects.filter(id__in=card_payments).values_list("state", flat=True)) == {
        S.CAPTURED
    }
    assert_once(payment_ids=card_payments, to_state=S.CAPTURED)
    for destination in (Destination.PMS, Destination.FINANCIAL_INSIGHTS):
        rows = Counter(
            OutboxMessage.objects.filter(
                payment_id__in=card_payments,
                destination=destination,
                event_type="payment.captured",
            ).values_list("payment_id", flat=True)
        )
        assert rows == dict.fromkeys(card_payments, 1), destination
    assert not AuditEvent.objects.filter(event_type=EventType.PAYMENT_EXCEPTION_FLAGGED).exists()

    # Direct Debits: one record each, in the newest status, signalled once, no event applied twice.
    records = list(SubscriptionPayment.objects.filter(gocardless_payment_id__in=direct_debits))
    assert len(records) == DIRECT_DEBITS
    assert {(r.gocardless_status, r.state) for r in records} == {("paid_out", "paid")}
    received = Counter(
        row.payload["gocardless_payment_id"]
        for row in OutboxMessage.objects.filter(
            destination=Destination.FINANCIAL_INSIGHTS, event_type="subscription.payment.received"
        )
    )
    assert received == dict.fromkeys(direct_debits, 1)
    # One audit row per (record, GoCardless event) at most: a mandate and its payment may both
    # be registered by the same event, but no record is changed twice by one event.
    applied = Counter(
        (e.subject_type, e.subject_id, e.payload.get("gocardless_event_id"))
        for e in AuditEvent.objects.filter(event_type=EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED)
        if e.payload.get("gocardless_event_id")
    )
    assert applied and set(applied.values()) == {1}

    # Deposit requests: one stored trigger, one deposit, one payment and one link sent, each.
    assert InboundEvent.objects.filter(module="appointment_manager").count() == DEPOSITS
    deposits = list(Deposit.objects.filter(appointment_id__startswith="APT-STORM-"))
    assert sorted(d.appointment_id for d in deposits) == [f"APT-STORM-{n}" for n in range(DEPOSITS)]
    assert {d.status for d in deposits} == {"requested"}
    deposit_payments = [d.payment_id for d in deposits]
    assert Payment.objects.filter(target_id__in=[str(d.id) for d in deposits]).count() == DEPOSITS
    assert_once(payment_ids=deposit_payments, to_state=S.AWAITING_CUSTOMER_ACTION)
    links = Counter(
        OutboxMessage.objects.filter(
            destination=Destination.COMMUNICATION_HUB, event_type="payment_link.deliver"
        ).values_list("payment_id", flat=True)
    )
    assert links == dict.fromkeys(deposit_payments, 1)

    # Downstream: every outbox row reached its consumer in exactly one POST, stored once.
    assert_delivered(sink, module_rows())
    assert_delivered(pms_sim, pms_rows())
    assert {r.signature_valid for r in sink.received} == {True}
