"""Transaction management: charge, refunds up to the original, cancel, the list, idempotency."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from integrations.simulators import dna
from tests.simulators.conftest import bearer, parse_page, token


@pytest.fixture
def webapi(http, dna_url):
    return bearer(token(http, dna_url, "webapi"))


def _pay(http, dna_url, *, amount="100.00", transaction_type="SALE") -> str:
    """A real hosted-page payment; returns its invoiceId."""
    invoice_id = str(uuid.uuid4())
    access_token = token(
        http,
        dna_url,
        "payment integration_hosted",
        invoiceId=invoice_id,
        amount=amount,
        currency="GBP",
        terminal="online-1",
    )
    data = {
        "invoiceId": invoice_id,
        "amount": Decimal(amount),
        "currency": "GBP",
        "transactionType": transaction_type,
        "paymentSettings": {
            "terminalId": "online-1",
            "returnUrl": "https://practice.example/ok",
            "failureReturnUrl": "https://practice.example/ko",
        },
        "auth": access_token,
    }
    page = http.get(dna.checkout_page_url(dna_url, data), follow_redirects=True)
    form = parse_page(page.text).forms[0]
    assert http.post(f"{dna_url}{form['action']}", data={"outcome": "card"}).status_code == 303
    return invoice_id


def _transactions(http, dna_url, headers, invoice_id):
    response = http.get(
        f"{dna_url}/v2/transactions/{invoice_id}/list?field=invoiceId", headers=headers
    )
    assert response.status_code == 200
    return response.json()["data"]


def _op(http, dna_url, headers, operation, **body):
    return http.post(f"{dna_url}/transaction/operation/{operation}", json=body, headers=headers)


def test_list_shows_the_sale(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url)

    [sale] = _transactions(http, dna_url, webapi, invoice_id)

    assert sale["invoiceId"] == invoice_id
    assert sale["transactionType"] == "SALE"
    assert sale["status"] == "CHARGE"
    assert sale["amount"] == 100
    assert sale["chargedAmount"] == 100
    assert sale["settlementBatchId"] is None
    assert _transactions(http, dna_url, webapi, "no-such-invoice") == []


def test_partial_refunds_up_to_the_original_then_refusal(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url)
    [sale] = _transactions(http, dna_url, webapi, invoice_id)

    first = _op(http, dna_url, webapi, "refund", id=sale["id"], amount=30, reason="goodwill")
    second = _op(http, dna_url, webapi, "refund", id=sale["id"], amount=70)
    beyond = _op(http, dna_url, webapi, "refund", id=sale["id"], amount="0.01")

    assert first.status_code == 200
    assert first.json()["amount"] == 30
    assert first.json()["parentId"] == sale["id"]
    assert first.json()["id"] != sale["id"]
    assert first.json()["remainingAmount"] == 70
    assert second.status_code == 200
    assert second.json()["remainingAmount"] == 0
    assert second.json()["refundedAmount"] == 100
    assert beyond.status_code == 400
    assert beyond.json()["code"] == "already_refunded"
    rows = _transactions(http, dna_url, webapi, invoice_id)
    assert [(r["transactionType"], r["amount"]) for r in rows] == [
        ("SALE", 100),
        ("REFUND", 30),
        ("REFUND", 70),
    ]


def test_a_refund_larger_than_what_is_left_is_refused_without_effect(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url, amount="50.00")
    [sale] = _transactions(http, dna_url, webapi, invoice_id)
    _op(http, dna_url, webapi, "refund", id=sale["id"], amount=20)

    response = _op(http, dna_url, webapi, "refund", id=sale["id"], amount="30.01")

    assert response.status_code == 400
    assert response.json()["code"] == "amount_too_large"
    assert len(_transactions(http, dna_url, webapi, invoice_id)) == 2


def test_refund_without_amount_is_the_rest(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url, amount="40.00")
    [sale] = _transactions(http, dna_url, webapi, invoice_id)
    _op(http, dna_url, webapi, "refund", id=sale["id"], amount="12.50")

    response = _op(http, dna_url, webapi, "refund", id=sale["id"])

    assert response.json()["amount"] == 27.5
    assert response.json()["remainingAmount"] == 0


def test_an_authorisation_is_charged_then_refundable(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url, amount="80.00", transaction_type="AUTH")
    [auth] = _transactions(http, dna_url, webapi, invoice_id)
    refund_before_charge = _op(http, dna_url, webapi, "refund", id=auth["id"])

    too_much = _op(http, dna_url, webapi, "charge", id=auth["id"], amount="80.01")
    charged = _op(http, dna_url, webapi, "charge", id=auth["id"], amount=60)
    again = _op(http, dna_url, webapi, "charge", id=auth["id"], amount=60)
    refund = _op(http, dna_url, webapi, "refund", id=auth["id"])

    assert auth["status"] == "AUTH"
    assert refund_before_charge.status_code == 400
    assert too_much.status_code == 400
    assert charged.json()["status"] == "CHARGE"
    assert charged.json()["amount"] == 60
    assert again.status_code == 400
    assert refund.json()["amount"] == 60


def test_cancel_an_authorisation_and_an_unsettled_charge(http, dna_url, webapi):
    auth = _transactions(http, dna_url, webapi, _pay(http, dna_url, transaction_type="AUTH"))[0]
    sale = _transactions(http, dna_url, webapi, _pay(http, dna_url))[0]

    cancelled_auth = _op(http, dna_url, webapi, "cancel", id=auth["id"])
    cancelled_sale = _op(http, dna_url, webapi, "cancel", id=sale["id"])
    refund_after_cancel = _op(http, dna_url, webapi, "refund", id=sale["id"])

    assert cancelled_auth.json()["status"] == "CANCEL"
    assert cancelled_sale.json()["status"] == "CANCEL"
    assert refund_after_cancel.status_code == 400


def test_a_settled_or_refunded_charge_cannot_be_cancelled(http, dna_url, webapi):
    refunded = _transactions(http, dna_url, webapi, _pay(http, dna_url))[0]
    _op(http, dna_url, webapi, "refund", id=refunded["id"], amount=1)
    settled = _transactions(http, dna_url, webapi, _pay(http, dna_url))[0]
    http.post(f"{dna_url}/sim/settlements")

    assert _op(http, dna_url, webapi, "cancel", id=refunded["id"]).status_code == 400
    assert _op(http, dna_url, webapi, "cancel", id=settled["id"]).status_code == 400
    assert _op(http, dna_url, webapi, "cancel", id="no-such-id").status_code == 404


def test_idempotency_key_replays_the_first_answer_without_a_second_refund(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url)
    [sale] = _transactions(http, dna_url, webapi, invoice_id)
    headers = {**webapi, "Idempotency-Key": "refund-1"}

    first = http.post(
        f"{dna_url}/transaction/operation/refund",
        json={"id": sale["id"], "amount": 10},
        headers=headers,
    )
    replay = http.post(
        f"{dna_url}/transaction/operation/refund",
        json={"amount": 10, "id": sale["id"]},
        headers=headers,
    )

    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert [r["transactionType"] for r in _transactions(http, dna_url, webapi, invoice_id)] == [
        "SALE",
        "REFUND",
    ]


def test_idempotency_key_with_a_different_body_is_a_conflict(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url)
    [sale] = _transactions(http, dna_url, webapi, invoice_id)
    headers = {**webapi, "Idempotency-Key": "refund-2"}
    http.post(
        f"{dna_url}/transaction/operation/refund",
        json={"id": sale["id"], "amount": 10},
        headers=headers,
    )

    conflict = http.post(
        f"{dna_url}/transaction/operation/refund",
        json={"id": sale["id"], "amount": 11},
        headers=headers,
    )
    other_path = http.post(
        f"{dna_url}/transaction/operation/cancel", json={"id": sale["id"]}, headers=headers
    )

    assert conflict.status_code == 422
    assert conflict.json()["code"] == "idempotency_key_reused"
    assert other_path.status_code == 422
    assert len(_transactions(http, dna_url, webapi, invoice_id)) == 2


def test_errors_are_replayed_too(http, dna_url, webapi):
    headers = {**webapi, "Idempotency-Key": "cancel-missing"}
    first = http.post(
        f"{dna_url}/transaction/operation/cancel", json={"id": "nope"}, headers=headers
    )
    replay = http.post(
        f"{dna_url}/transaction/operation/cancel", json={"id": "nope"}, headers=headers
    )

    assert first.status_code == replay.status_code == 404
    assert replay.headers["idempotent-replayed"] == "true"


def test_idempotent_link_creation(http, dna_url):
    headers = {**bearer(token(http, dna_url, "pay_by_link")), "Idempotency-Key": "link-1"}
    body = {
        "amount": 5,
        "currency": "GBP",
        "terminalId": "t",
        "expirationDate": "2999-01-01T00:00:00Z",
        "customerName": "A",
    }

    first = http.post(f"{dna_url}/v1/payment-links", json=body, headers=headers)
    replay = http.post(f"{dna_url}/v1/payment-links", json=body, headers=headers)

    assert first.status_code == replay.status_code == 201
    assert replay.json()["id"] == first.json()["id"]
    assert http.get(f"{dna_url}/v1/payment-links", headers=headers).json()["totalCount"] == 1


def test_an_unauthorised_attempt_does_not_use_up_the_key(http, dna_url, webapi):
    invoice_id = _pay(http, dna_url)
    [sale] = _transactions(http, dna_url, webapi, invoice_id)
    body = {"id": sale["id"], "amount": 10}

    refused = http.post(
        f"{dna_url}/transaction/operation/refund",
        json=body,
        headers={"Authorization": "Bearer expired", "Idempotency-Key": "refund-3"},
    )
    accepted = http.post(
        f"{dna_url}/transaction/operation/refund",
        json=body,
        headers={**webapi, "Idempotency-Key": "refund-3"},
    )

    assert refused.status_code == 401
    assert accepted.status_code == 200
    assert "idempotent-replayed" not in accepted.headers
