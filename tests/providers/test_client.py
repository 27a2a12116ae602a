"""The DNA client against the simulator: tokens, amounts, idempotency, retries, errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from integrations.dna.client import (
    DnaClient,
    DnaOutcomeUnknown,
    DnaRefused,
    encode_json,
    format_amount,
)
from integrations.dna.types import (
    CheckoutRequest,
    PaymentLinkRequest,
    TerminalSaleRequest,
    TerminalStatus,
)
from tests.providers.conftest import pay_on_hosted_page

NOWHERE = "http://127.0.0.1:9/callback"  # nothing listens: the simulator notes the failure


class Clock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self):
        return self.now


def _checkout(client: DnaClient, amount: str = "40.00", transaction_type: str = "SALE"):
    invoice_id = str(uuid.uuid4())
    checkout = client.hosted_checkout(
        CheckoutRequest(
            invoice_id=invoice_id,
            amount=Decimal(amount),
            currency="GBP",
            terminal_id="online-test",
            description="Test practice",
            return_url="https://practice.example/done",
            failure_return_url="https://practice.example/done",
            callback_url=NOWHERE,
            failure_callback_url=NOWHERE,
            transaction_type=transaction_type,
        )
    )
    return invoice_id, checkout


def _charged(client, http, amount="40.00"):
    invoice_id, checkout = _checkout(client, amount)
    pay_on_hosted_page(http, checkout.redirect_url)
    [transaction] = client.transactions(invoice_id)
    return transaction


def test_amounts_are_written_in_their_shortest_form_never_through_float():
    assert format_amount(Decimal("24.00")) == "24"
    assert format_amount(Decimal("12.50")) == "12.5"
    assert format_amount(Decimal("0.10")) == "0.1"
    assert encode_json({"amount": Decimal("1234567.89"), "n": [Decimal("5.00")]}) == (
        '{"amount":1234567.89,"n":[5]}'
    )
    with pytest.raises(TypeError):
        encode_json({"amount": 12.5})


def test_one_token_serves_many_calls_until_it_expires(dna):
    clock = Clock()
    with DnaClient(clock=clock) as client:
        for _ in range(3):
            assert client.transactions(str(uuid.uuid4())) == []
    with DnaClient(clock=clock) as another_unit_of_work:
        another_unit_of_work.transactions(str(uuid.uuid4()))

    assert dna.count("/oauth2/token") == 1

    clock.now += timedelta(days=7)  # webapi tokens live 604800 s
    with DnaClient(clock=clock) as client:
        client.transactions(str(uuid.uuid4()))
        client.transactions(str(uuid.uuid4()))

    assert dna.count("/oauth2/token") == 2
    token_scopes = [r["body"]["scope"] for r in dna.requests("/oauth2/token")]
    assert token_scopes == ["webapi", "webapi"]


def test_a_token_the_provider_forgot_is_renewed_once(dna, http):
    with DnaClient() as client:
        client.transactions(str(uuid.uuid4()))
    http.post(f"{dna.url}/sim/reset")  # DNA forgets every token (and its request log)

    with DnaClient() as client:
        assert client.transactions(str(uuid.uuid4())) == []

    calls = [(r["method"], r["path"].split("/")[1]) for r in dna.requests()]
    assert calls == [("GET", "v2"), ("POST", "oauth2"), ("GET", "v2")]


def test_hosted_checkout_binds_the_token_and_builds_payment_data(dna, http):
    with DnaClient() as client:
        invoice_id, checkout = _checkout(client, "24.50")

    data = checkout.payment_data
    assert data["invoiceId"] == invoice_id
    assert data["amount"] == Decimal("24.50")
    assert data["paymentSettings"]["terminalId"] == "online-test"
    assert data["auth"]["token_type"] == "Bearer" and data["auth"]["access_token"]
    assert checkout.script_url == f"{dna.url}/checkout/payment-api.js"
    [token_request] = dna.requests("/oauth2/token")
    assert token_request["body"]["scope"] == "payment integration_hosted"
    assert token_request["body"]["amount"] == "24.5"
    assert token_request["body"]["invoiceId"] == invoice_id
    page = http.get(checkout.redirect_url, follow_redirects=True)
    assert page.status_code == 200
    assert "£24.50" in page.text


def test_refund_replay_with_the_same_key_returns_the_first_answer(dna, http):
    with DnaClient() as client:
        charged = _charged(client, http, "40.00")
        first = client.refund(
            transaction_id=charged.id,
            amount=Decimal("15.00"),
            reason="patient_request",
            idempotency_key="pay:test:refund:1",
        )
        replay = client.refund(
            transaction_id=charged.id,
            amount=Decimal("15.00"),
            reason="patient_request",
            idempotency_key="pay:test:refund:1",
        )
        second = client.refund(
            transaction_id=charged.id,
            amount=Decimal("10.00"),
            reason="patient_request",
            idempotency_key="pay:test:refund:2",
        )
        listed = client.transactions(charged.invoice_id)

    assert replay == first
    assert first.parent_id == charged.id and first.amount == Decimal("15")
    assert second.id != first.id
    assert second.refunded_amount == Decimal("25") and second.remaining_amount == Decimal("15")
    assert sorted(t.amount for t in listed if t.transaction_type == "REFUND") == [
        Decimal("10"),
        Decimal("15"),
    ]
    bodies = [r["body"] for r in dna.requests("/transaction/operation/refund")]
    assert bodies[0] == {
        "id": charged.id,
        "amount": 15,
        "reason": "patient_request",
    }  # a JSON number
    keys = [r["headers"]["idempotency-key"] for r in dna.requests("/transaction/operation/")]
    assert keys == ["pay:test:refund:1", "pay:test:refund:1", "pay:test:refund:2"]


def test_a_definite_refusal_is_refused_and_not_retried(dna):
    with DnaClient() as client, pytest.raises(DnaRefused) as refused:
        client.refund(
            transaction_id=str(uuid.uuid4()),
            amount=None,
            reason="",
            idempotency_key="pay:test:refund:unknown",
        )
    assert refused.value.status == 404 and refused.value.code == "not_found"
    assert dna.count("/transaction/operation/refund") == 1


def test_a_money_call_that_gets_a_500_is_unknown_and_not_repeated(dna, http):
    with DnaClient() as client:
        charged = _charged(client, http)
        dna.fault("/transaction/operation/refund", "500")
        with pytest.raises(DnaOutcomeUnknown):
            client.refund(
                transaction_id=charged.id, amount=None, reason="", idempotency_key="pay:t:r:500"
            )
        assert dna.count("/transaction/operation/refund") == 1
        # The same key later runs for real: a 5xx left no record at DNA.
        done = client.refund(
            transaction_id=charged.id, amount=None, reason="", idempotency_key="pay:t:r:500"
        )
    assert done.amount == Decimal("40")


def test_a_money_call_that_times_out_is_unknown(dna, http):
    with DnaClient() as client:
        charged = _charged(client, http)
        dna.fault("/transaction/operation/cancel", "timeout", seconds=3)
        with pytest.raises(DnaOutcomeUnknown):
            client.cancel(transaction_id=charged.id, idempotency_key="pay:t:cancel")
    assert dna.count("/transaction/operation/cancel") == 1


def test_reads_are_retried_within_a_bound(dna):
    dna.fault("/v2/transactions/", "500", count=1)
    with DnaClient() as client:
        assert client.transactions(str(uuid.uuid4())) == []
    assert dna.count("/v2/transactions/", "GET") == 2

    dna.fault("/v2/transactions/", "503", count=5)
    with DnaClient() as client, pytest.raises(DnaOutcomeUnknown):
        client.transactions(str(uuid.uuid4()))
    assert dna.count("/v2/transactions/", "GET") == 4  # 1 + DNA_HTTP_RETRIES(1) more


def test_pay_by_link_api(dna):
    expires = datetime.now(UTC) + timedelta(hours=24)
    request = PaymentLinkRequest(
        amount=Decimal("80.00"),
        currency="GBP",
        terminal_id="online-test",
        expires_at=expires,
        customer_name="Patient",
        invoice_id=str(uuid.uuid4()),
        description="Treatment balance",
    )
    with DnaClient() as client:
        created = client.create_payment_link(request, idempotency_key="pay:link:create:1")
        again = client.create_payment_link(request, idempotency_key="pay:link:create:1")
        fetched = client.get_payment_link(created.id)
        active = client.list_payment_links(statuses=("active",))
        cancelled = client.cancel_payment_link(created.id, idempotency_key="pay:link:cancel:1")
        with pytest.raises(DnaRefused) as refused:
            client.cancel_payment_link(created.id, idempotency_key="pay:link:cancel:2")

    assert again.id == created.id
    assert fetched.amount == Decimal("80") and fetched.status == "active"
    assert fetched.url.startswith(dna.url) and fetched.invoice_id == request.invoice_id
    assert [link.id for link in active.links] == [created.id] and active.total == 1
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert refused.value.code == "link_not_cancellable"
    assert {r["body"]["scope"] for r in dna.requests("/oauth2/token")} == {"pay_by_link"}


def test_terminal_sale_and_status(dna):
    uti = str(uuid.uuid4())
    with DnaClient() as client:
        sent = client.terminal_sale(
            TerminalSaleRequest(
                uti=uti,
                tid="TIDPROV01",
                amount=Decimal("12.50"),
                currency="GBP",
                reference=uuid.UUID(uti).hex,
                webhook_url=NOWHERE,
                expires_at=datetime.now(UTC) + timedelta(minutes=3),
            ),
            idempotency_key=f"pay:{uti}:terminal_sale",
        )
        status = client.terminal_status(uti)
        unknown = client.terminal_status(str(uuid.uuid4()))
    assert sent.status == TerminalStatus.PENDING and sent.amount == Decimal("12.5")
    assert status.status == TerminalStatus.PENDING
    assert unknown.status == TerminalStatus.UNKNOWN
    [sale] = [r for r in dna.requests("/axept/transaction") if r["method"] == "POST"]
    assert sale["body"]["amount"] == "12.5"
    assert dna.count("/axept/auth") == 1
