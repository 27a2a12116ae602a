"""Settlement batches from DNA matched to payments and refunds; what cannot match is kept."""

from __future__ import annotations

import io
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command

from audit.actors import Actor
from audit.models import AuditEvent
from integrations.dna.client import DnaClient
from integrations.dna.models import SettlementBatch, SettlementItem
from integrations.dna.selectors import reconciliation_exceptions
from integrations.dna.settlement import BatchData, LineData, reconcile_settlements
from integrations.dna.types import CheckoutRequest
from payments import flows, services
from payments.models import Payment, PaymentState, ReasonCode, TargetType
from practices.roles import Role
from tests.factories import PracticeFactory, make_staff
from tests.providers.conftest import pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState


def _online(patient, practice, site, http, amount, target_id):
    session = flows.online_checkout_start(
        actor=Actor.for_patient(patient),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=target_id,
        amount=amount,
        return_url="https://app.example/return",
    )
    pay_on_hosted_page(http, session.redirect_url)
    return Payment.objects.get(pk=session.payment.pk)


def _stranger_charge(http, practice, amount="33.00"):
    """A charge at DNA that is not one of our payments (made outside Primoro)."""
    invoice_id = str(uuid.uuid4())
    with DnaClient() as client:
        checkout = client.hosted_checkout(
            CheckoutRequest(
                invoice_id=invoice_id,
                amount=Decimal(amount),
                currency="GBP",
                terminal_id=practice.dna_terminal_id,
                description="Outside Primoro",
                return_url="https://elsewhere.example/",
                failure_return_url="https://elsewhere.example/",
                callback_url="http://127.0.0.1:9/",
                failure_callback_url="http://127.0.0.1:9/",
            )
        )
    pay_on_hosted_page(http, checkout.redirect_url)
    return invoice_id


def test_a_batch_reconciles_payments_and_refunds_and_keeps_the_unknown(
    live, http, client, practice, site, patient, sim_terminal, reception_actor, manager_actor
):
    online = _online(patient, practice, site, http, "60.00", "INV-S1")
    terminal = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-S2",
        amount="30.00",
        terminal=sim_terminal,
    )
    live.terminal("TIDPROV01", "approve")
    refund = services.refund_request(
        payment_id=online.id,
        actor=manager_actor,
        amount="10.00",
        reason_code=ReasonCode.PATIENT_REQUEST,
    ).refund
    stranger = _stranger_charge(http, practice)
    batch = live.settle()
    assert len(batch["items"]) == 4

    stats = reconcile_settlements()

    assert (stats.batches_new, stats.matched, stats.exceptions) == (1, 3, 1)
    online.refresh_from_db()
    terminal.refresh_from_db()
    assert online.state == S.RECONCILED and terminal.state == S.RECONCILED
    reconciled = AuditEvent.objects.filter(payment_id=online.id, to_state=S.RECONCILED).get()
    assert reconciled.payload["batch_reference"] == batch["batch_id"]
    refund_item = SettlementItem.objects.get(kind="refund")
    assert refund_item.refund_id == refund.id and refund_item.status == "matched"
    sale_fee = SettlementItem.objects.get(payment=terminal).fee
    assert sale_fee == Decimal("0.65")  # 1.5 % + 0.20, as the simulator charges
    [exception] = SettlementItem.objects.filter(status="exception")
    assert exception.invoice_id == stranger and exception.problem == "unknown_transaction"
    assert exception.practice_id == practice.id  # DNA's terminal id names the practice
    assert exception.amount == Decimal("33.00")

    finance = make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)
    outsider = make_staff(Role.FINANCE_ADMIN, practice=PracticeFactory(), is_staff=True)
    assert list(reconciliation_exceptions(finance)) == [exception]
    assert list(reconciliation_exceptions(outsider)) == []
    client.force_login(finance)
    listed = client.get("/admin/dna/settlementitem/?status__exact=exception")
    assert listed.status_code == 200 and stranger in listed.content.decode()
    client.force_login(outsider)
    hidden = client.get("/admin/dna/settlementitem/?status__exact=exception")
    assert hidden.status_code == 200 and stranger not in hidden.content.decode()

    again = reconcile_settlements()  # nothing new: nothing changes
    assert (again.batches_new, again.matched, again.exceptions) == (0, 0, 0)
    assert SettlementBatch.objects.count() == 1 and SettlementItem.objects.count() == 4


class WrongAmountSource:
    """Another settlement source (the setting names the class): one line with a wrong amount."""

    payment: Payment | None = None

    def fetch_batches(self):
        payment = self.payment
        line = LineData(
            transaction_id=payment.provider_reference,
            parent_id="",
            invoice_id=str(payment.id),
            kind="sale",
            amount=payment.captured_amount - Decimal("1.00"),
            fee=Decimal("0.50"),
            currency="GBP",
        )
        return [
            BatchData(
                reference="batch-wrong-amount",
                settled_at=None,
                currency="GBP",
                lines=[line],
                sales=line.amount,
                refunds=Decimal(0),
                fees=line.fee,
                net=line.amount - line.fee,
            )
        ]


def test_an_amount_mismatch_is_an_exception_and_the_payment_stays_captured(
    live, http, settings, practice, site, patient
):
    payment = _online(patient, practice, site, http, "45.00", "INV-S3")
    WrongAmountSource.payment = payment
    settings.DNA_SETTLEMENT_SOURCE = "tests.providers.test_settlement.WrongAmountSource"

    out = io.StringIO()
    call_command("reconcile_settlements", stdout=out)

    assert "1 new batch(es); 0 matched, 1 exception(s)" in out.getvalue()
    item = SettlementItem.objects.get()
    assert item.problem == "amount_mismatch" and item.payment_id == payment.id
    assert item.detail == "Settled 44.00, captured 45.00."
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED


def test_a_chargeback_in_a_batch_flags_the_payment_as_disputed_with_a_task(
    live, http, practice, site, patient
):
    from integrations.models import Destination, OutboxMessage
    from payments.selectors import payment_exceptions

    online = _online(patient, practice, site, http, "75.00", "INV-CB1")
    live.settle()
    reconcile_settlements()
    answer = live.http.post(
        f"{live.url}/sim/chargebacks", json={"transactionId": online.provider_reference}
    )
    assert answer.status_code == 201
    batch = live.settle()
    assert [i["type"] for i in batch["items"]] == ["chargeback"]

    stats = reconcile_settlements()

    assert stats.exceptions == 1
    online.refresh_from_db()
    assert online.disputed and online.state == S.RECONCILED  # the money question is a person's now
    item = SettlementItem.objects.get(kind="chargeback")
    assert (
        item.status == "exception" and item.problem == "chargeback" and item.payment_id == online.id
    )
    task = OutboxMessage.objects.filter(destination=Destination.TASK_MANAGER, payment_id=online.id)
    assert task.count() == 1
    finance = make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)
    assert [p.id for p in payment_exceptions(finance, kind="disputed")] == [online.id]
    reconcile_settlements()  # a second pass changes nothing
    assert task.count() == 1


class ListedSource:
    """A settlement source serving the batches a test writes (the `source=` argument)."""

    def __init__(self, *batches: BatchData):
        self.batches = list(batches)

    def fetch_batches(self):
        return self.batches


def _sale(payment: Payment, amount: Decimal | None = None) -> LineData:
    return LineData(
        transaction_id=payment.provider_reference,
        parent_id="",
        invoice_id=str(payment.id),
        kind="sale",
        amount=payment.captured_amount if amount is None else amount,
        fee=Decimal("0.50"),
        currency="GBP",
    )


def _batch(reference: str, *lines: LineData) -> BatchData:
    sales = sum((line.amount for line in lines), Decimal(0))
    fees = sum((line.fee for line in lines), Decimal(0))
    return BatchData(
        reference=reference,
        settled_at=None,
        currency="GBP",
        lines=list(lines),
        sales=sales,
        refunds=Decimal(0),
        fees=fees,
        net=sales - fees,
    )


def test_a_batch_listing_one_transaction_twice_is_stored_with_an_exception(
    live, http, practice, site, patient
):
    twice = _online(patient, practice, site, http, "40.00", "INV-D1")
    once = _online(patient, practice, site, http, "15.00", "INV-D2")
    source = ListedSource(
        _batch("batch-dup", _sale(twice), _sale(once), _sale(twice, Decimal("4.00")))
    )

    stats = reconcile_settlements(source=source)

    assert (stats.batches_new, stats.matched, stats.exceptions) == (1, 1, 1)
    item = SettlementItem.objects.get(transaction_id=twice.provider_reference)
    assert (item.status, item.problem) == ("exception", "duplicate_in_batch")
    assert item.detail == "Listed 2 times in this batch (amounts 40.00, 4.00)."
    assert item.practice_id == practice.id and item.payment_id == twice.id
    twice.refresh_from_db()
    once.refresh_from_db()
    assert twice.state == S.CAPTURED  # not reconciled against a doubtful batch
    assert once.state == S.RECONCILED
    finance = make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)
    assert list(reconciliation_exceptions(finance)) == [item]

    again = reconcile_settlements(source=source)  # the same batch again: already stored
    assert (again.batches_new, again.matched, again.exceptions) == (0, 0, 0)
    assert SettlementItem.objects.count() == 2


def test_a_transaction_settled_in_a_second_batch_is_an_exception_not_a_second_match(
    live, http, practice, site, patient
):
    payment = _online(patient, practice, site, http, "52.00", "INV-D3")
    reconcile_settlements(source=ListedSource(_batch("batch-first", _sale(payment))))
    payment.refresh_from_db()
    assert payment.state == S.RECONCILED

    stats = reconcile_settlements(source=ListedSource(_batch("batch-second", _sale(payment))))

    assert (stats.batches_new, stats.matched, stats.exceptions) == (1, 0, 1)
    second = SettlementItem.objects.get(batch__reference="batch-second")
    assert (second.status, second.problem) == ("exception", "settled_twice")
    assert second.detail == (
        f"Transaction {payment.provider_reference} was already settled in batch batch-first."
    )
    assert second.practice_id == practice.id
    first = SettlementItem.objects.get(batch__reference="batch-first")
    assert first.status == "matched"
    reconciled = AuditEvent.objects.filter(payment_id=payment.id, to_state=S.RECONCILED)
    assert [a.payload["batch_reference"] for a in reconciled] == ["batch-first"]
