"""Refunds and their ProviderOperation rows, executed against DNA with idempotency keys."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.dna import janitor, operations
from integrations.dna.client import DnaClient
from payments import flows, services
from payments.models import (
    Payment,
    PaymentMethod,
    PaymentState,
    ProviderOperation,
    ReasonCode,
    Refund,
    TargetType,
    idempotency_key,
)
from tests.providers.conftest import pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState


@pytest.fixture
def captured(live, http, practice, site, patient):
    """A £60 online payment captured through DNA's hosted page."""
    session = flows.online_checkout_start(
        actor=Actor.for_patient(patient),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-3001",
        amount="60.00",
        return_url="https://app.example/return",
    )
    pay_on_hosted_page(http, session.redirect_url)
    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.CAPTURED
    return payment


def _refund(payment, actor, amount=None):
    result = services.refund_request(
        payment_id=payment.id, actor=actor, amount=amount, reason_code=ReasonCode.PATIENT_REQUEST
    )
    return Refund.objects.get(pk=result.refund.pk)


def _dna_refunds(live, payment):
    return [t for t in live.transactions(str(payment.id)) if t["transactionType"] == "REFUND"]


def test_several_partial_refunds_then_the_rest(live, captured, manager_actor):
    first = _refund(captured, manager_actor, "20.00")
    second = _refund(captured, manager_actor, "15.50")
    captured.refresh_from_db()
    assert captured.state == S.PARTIALLY_REFUNDED
    rest = _refund(captured, manager_actor)

    captured.refresh_from_db()
    assert captured.state == S.REFUNDED and captured.refunded_amount == Decimal("60.00")
    assert [r.status for r in (first, second, rest)] == ["succeeded"] * 3
    assert rest.amount == Decimal("24.50")
    dna_refunds = _dna_refunds(live, captured)
    assert sorted(Decimal(str(t["amount"])) for t in dna_refunds) == [
        Decimal("15.5"),
        Decimal("20"),
        Decimal("24.5"),
    ]
    assert {t["id"] for t in dna_refunds} == {r.provider_reference for r in (first, second, rest)}
    sent = live.requests("/transaction/operation/refund")
    assert [r["headers"]["idempotency-key"] for r in sent] == [
        idempotency_key(captured.id, "refund", str(r.id)) for r in (first, second, rest)
    ]
    assert {r["body"]["id"] for r in sent} == {captured.provider_reference}
    ops = ProviderOperation.objects.filter(payment=captured, operation="refund")
    assert sorted(ops.values_list("status", flat=True)) == ["succeeded"] * 3


def test_a_full_refund_in_one_go(live, captured, manager_actor):
    refund = _refund(captured, manager_actor)

    captured.refresh_from_db()
    assert captured.state == S.REFUNDED and refund.amount == Decimal("60.00")
    assert [Decimal(str(t["amount"])) for t in _dna_refunds(live, captured)] == [Decimal("60")]


def test_running_a_finished_operation_again_calls_nobody(live, captured, manager_actor):
    refund = _refund(captured, manager_actor, "10.00")
    op = ProviderOperation.objects.get(idempotency_key=refund.idempotency_key)

    assert operations.execute(op.pk) == "skipped"
    janitor.run()

    assert live.count("/transaction/operation/refund") == 1
    assert len(_dna_refunds(live, captured)) == 1


def test_an_unknown_refund_outcome_is_sent_again_with_the_same_key(live, captured, manager_actor):
    live.fault("/transaction/operation/refund", "500")

    refund = _refund(captured, manager_actor, "25.00")

    captured.refresh_from_db()
    op = ProviderOperation.objects.get(idempotency_key=refund.idempotency_key)
    assert refund.status == "pending" and op.status == "pending"
    assert captured.state == S.CAPTURED and captured.refunded_amount == 0

    janitor.run()

    refund.refresh_from_db()
    captured.refresh_from_db()
    assert refund.status == "succeeded" and captured.refunded_amount == Decimal("25.00")
    keys = [r["headers"]["idempotency-key"] for r in live.requests("/transaction/operation/refund")]
    assert keys == [refund.idempotency_key, refund.idempotency_key]
    assert len(_dna_refunds(live, captured)) == 1


def test_a_refund_that_reached_dna_but_whose_answer_was_lost_is_not_repeated(
    live, captured, manager_actor
):
    live.fault("/transaction/operation/refund", "drop")
    refund = _refund(captured, manager_actor, "30.00")
    assert refund.status == "pending"
    # It did reach DNA (here: sent again by hand with the same key, as the lost one was).
    with DnaClient() as client:
        first = client.refund(
            transaction_id=captured.provider_reference,
            amount=Decimal("30.00"),
            reason=refund.reason_code,
            idempotency_key=refund.idempotency_key,
        )

    janitor.run()

    refund.refresh_from_db()
    assert refund.status == "succeeded" and refund.provider_reference == first.id
    assert len(_dna_refunds(live, captured)) == 1
    captured.refresh_from_db()
    assert captured.refunded_amount == Decimal("30.00")


def test_a_refund_dna_refuses_fails_and_releases_the_amount(live, captured, manager_actor):
    with DnaClient() as client:  # refunded at DNA behind our back
        client.refund(
            transaction_id=captured.provider_reference,
            amount=None,
            reason="",
            idempotency_key="outside-primoro",
        )

    refund = _refund(captured, manager_actor, "10.00")

    captured.refresh_from_db()
    assert refund.status == "failed" and "fully refunded" in refund.failure_reason
    assert captured.state == S.CAPTURED and captured.refunded_amount == 0
    op = ProviderOperation.objects.get(idempotency_key=refund.idempotency_key)
    assert op.status == "failed"


def test_cash_never_touches_dna(dna, reception_actor, manager_actor, practice, site, patient):
    payment = services.payment_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-CASH",
        amount="20.00",
        method=PaymentMethod.CASH,
    )
    services.tender_record_received(payment_id=payment.id, actor=reception_actor)
    _refund(payment, manager_actor, "5.00")

    assert not ProviderOperation.objects.exists()
    assert dna.requests() == []


def test_an_outcome_unknown_for_long_is_flagged_once_and_asked_less_often(
    live, captured, manager_actor, settings
):
    settings.DNA_OPERATION_FLAG_AFTER_ATTEMPTS = 2
    live.fault("/transaction/operation/refund", "500", count=3)
    refund = _refund(captured, manager_actor, "5.00")  # attempt 1: unknown

    janitor.run()  # attempt 2: unknown, flagged
    janitor.run()  # attempt 3: unknown, not flagged again

    op = ProviderOperation.objects.get(idempotency_key=refund.idempotency_key)
    assert (op.status, op.attempts) == ("pending", 3)
    flags = AuditEvent.objects.filter(
        event_type=EventType.PAYMENT_EXCEPTION_FLAGGED, payment_id=captured.id
    )
    assert [f.reason_code for f in flags] == ["provider_outcome_unknown"]
    # Backoff: after 3 tries the next waits lease × 4.
    assert (
        services.provider_operations_due(
            lease_seconds=10, now=op.updated_at + timedelta(seconds=39)
        )
        == []
    )
    assert services.provider_operations_due(
        lease_seconds=10, now=op.updated_at + timedelta(seconds=41)
    ) == [op.pk]

    janitor.run()  # DNA answers at last

    refund.refresh_from_db()
    assert refund.status == "succeeded"
    assert len(_dna_refunds(live, captured)) == 1
