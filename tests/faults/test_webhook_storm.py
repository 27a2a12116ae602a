"""Every provider webhook delivered three times at once, in shuffled order, over real HTTP.

Invariant: 0 doubled state changes and 0 lost events. Each distinct event is
stored once and processed; each card payment is captured exactly once (one
capture audit event, one PMS writeback, one Financial Signal) whether its
authorisation or its charge arrived first; each Direct Debit payment ends in
the newest status GoCardless reported, registered once, with one "received"
Financial Signal, and no GoCardless event is applied twice.

The app runs in pytest-django's live server (a thread per request, each with
its own database connection), so the three copies of a delivery really race
for the unique constraint and the row locks. Processing happens inside each
request (eager Celery), which is the tightest race the pipeline can meet.
"""

from __future__ import annotations

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
from integrations.models import Destination, OutboxMessage, WebhookEvent
from integrations.simulators import signing
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from subscriptions.models import SubscriptionPayment
from tests.factories import TerminalFactory
from tests.providers.conftest import TERMINAL_KEY_ID, TERMINAL_SECRET, json_body, signed_callback
from tests.subscriptions.conftest import SECRET as GC_SECRET
from tests.subscriptions.conftest import gc_event, publish, scenario

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState
COPIES = 3
ONLINE, TERMINALS, DIRECT_DEBITS = 8, 4, 3


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
        body, signature = _signed(events)
        deliveries.append(
            (
                "/webhooks/gocardless/",
                body,
                {"Content-Type": "application/json", "Webhook-Signature": signature},
            )
        )
    return deliveries, payment_id


def _signed(events):
    from integrations.simulators import gocardless

    body = gocardless.webhook_body(events)
    return body, signing.gocardless_signature(body, GC_SECRET)


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


def test_each_webhook_three_times_at_once_out_of_order_changes_each_payment_once(
    live, live_server, gc_api, reception_actor, practice, site, patient
):
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
        deliveries.append(_terminal_delivery(live_server.url, payment, terminal.tid))
    direct_debits = []
    for n in range(DIRECT_DEBITS):
        gc_deliveries, gc_payment_id = _gocardless_deliveries(gc_api, practice, patient, n)
        deliveries += gc_deliveries
        direct_debits.append(gc_payment_id)
    distinct_gc_events = DIRECT_DEBITS * 5

    statuses = _storm(live_server.url, deliveries, seed=2026)

    # Nothing refused, nothing lost: every copy answered 2xx, every distinct event stored once.
    assert len(statuses) == COPIES * len(deliveries)
    assert {code // 100 for code in statuses} == {2}
    stored = Counter(WebhookEvent.objects.values_list("provider", flat=True))
    assert stored == {
        "dna": 2 * ONLINE,
        "dna_terminal": TERMINALS,
        "gocardless": distinct_gc_events,
    }
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}

    # Card payments: captured once each, one writeback and one Financial Signal each.
    card_payments = [p.id for p in online] + [p.id for p, _ in on_terminals]
    assert set(Payment.objects.filter(id__in=card_payments).values_list("state", flat=True)) == {
        S.CAPTURED
    }
    captures = Counter(
        AuditEvent.objects.filter(payment_id__in=card_payments, to_state=S.CAPTURED).values_list(
            "payment_id", flat=True
        )
    )
    assert captures == dict.fromkeys(card_payments, 1)
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
