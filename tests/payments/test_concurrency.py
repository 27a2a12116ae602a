"""Duplicate capture is impossible and refunds never exceed the capture, under real concurrency.

Each thread has its own database connection (Django connections are per
thread), so these are genuinely concurrent transactions against PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from audit.models import AuditEvent
from audit.verify import verify_chain
from integrations.models import OutboxMessage
from payments import services
from payments.errors import PaymentError
from payments.models import PaymentState, Refund
from tests.payments.helpers import captured, new_payment

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 20


def _race(fn, count=WORKERS):
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait()
        try:
            return fn(i)
        except PaymentError as error:
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_twenty_concurrent_captures_capture_once(
    practice, site, patient, terminal, reception_actor, provider_actor
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    services.payment_await_customer(payment_id=payment.id, actor=provider_actor)

    results = _race(
        lambda _i: services.payment_capture(payment_id=payment.id, actor=provider_actor)
    )

    assert sum(1 for r in results if r.changed) == 1
    assert all(r.payment.state == PaymentState.CAPTURED for r in results)
    assert (
        AuditEvent.objects.filter(payment_id=payment.id, to_state=PaymentState.CAPTURED).count()
        == 1
    )
    assert sorted(
        OutboxMessage.objects.filter(payment_id=payment.id).values_list("destination", flat=True)
    ) == [
        "communication_hub",
        "financial_insights",
        "pms",
    ]
    assert verify_chain(practice.id).ok


def test_concurrent_refunds_never_exceed_the_capture(
    practice, site, patient, terminal, reception_actor, provider_actor, manager_actor
):
    payment = captured(
        reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="100.00"
    )

    results = _race(
        lambda _i: services.refund_request(
            payment_id=payment.id, actor=manager_actor, amount="15.00", reason_code="other"
        )
    )

    accepted = [r for r in results if not isinstance(r, PaymentError)]
    refused = [r for r in results if isinstance(r, PaymentError)]
    assert len(accepted) == 6  # 6 × 15 = 90 ≤ 100 < 7 × 15
    assert {e.code for e in refused} == {"refund_exceeds_captured"}
    for result in accepted:
        services.refund_complete(refund_id=result.refund.id, actor=provider_actor)
    payment.refresh_from_db()
    assert payment.refunded_amount == Decimal("90.00")
    assert payment.state == PaymentState.PARTIALLY_REFUNDED
    assert Refund.objects.filter(payment=payment).count() == 6


def test_capture_racing_a_void_ends_in_exactly_one_of_them(
    practice, site, patient, terminal, reception_actor, provider_actor, manager_actor
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)

    def either(i):
        if i % 2:
            return services.payment_capture(payment_id=payment.id, actor=provider_actor)
        return services.payment_void(
            payment_id=payment.id, actor=manager_actor, reason_code="other"
        )

    results = _race(either, count=10)
    payment.refresh_from_db()
    assert payment.state in (PaymentState.CAPTURED, PaymentState.VOIDED)
    assert sum(1 for r in results if not isinstance(r, PaymentError) and r.changed) == 1
    assert (
        AuditEvent.objects.filter(
            payment_id=payment.id, to_state__in=["captured", "voided"]
        ).count()
        == 1
    )
