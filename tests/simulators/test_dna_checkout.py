"""Hosted checkout: a page with no card field, signed callbacks, redirects back to us."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from decimal import Decimal

import pytest

from integrations.simulators import dna
from tests.simulators.conftest import CLIENT_SECRET, parse_page, token

CARDISH = re.compile(r"card|cc-|cc_|ccnum|pan|number|cvv|cvc|csc|exp", re.IGNORECASE)


def _payment_data(http, dna_url, receiver, *, amount="12.50", wallets=(), transaction_type=None):
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
        "description": "Check-up",
        "amount": Decimal(amount),
        "currency": "GBP",
        "language": "en-gb",
        "paymentSettings": {
            "terminalId": "online-1",
            "returnUrl": "https://practice.example/pay/done",
            "failureReturnUrl": "https://practice.example/pay/failed",
            "callbackUrl": receiver.url("/webhooks/dna/"),
            "failureCallbackUrl": receiver.url("/webhooks/dna/failure/"),
        },
        "customerDetails": {
            "email": "patient@example.test",
            "accountDetails": {"accountId": "patient-42"},
            "billingAddress": {"firstName": "Ada", "lastName": "Lovelace"},
        },
        "merchantCustomData": '{"payment":"p-1"}',
        "paymentMethods": list(wallets),
        "auth": {"access_token": access_token, "token_type": "Bearer"},
    }
    if transaction_type:
        data["transactionType"] = transaction_type
    return data


def _open(http, dna_url, data):
    response = http.get(dna.checkout_page_url(dna_url, data), follow_redirects=True)
    assert response.status_code == 200, response.text
    return response


def _verify_dna_signature(raw_body: bytes) -> dict:
    """Independent of signing.py: numbers exactly as written, HMAC over the concatenation."""
    exact = json.loads(raw_body, parse_float=str, parse_int=str)
    message = (
        f"{exact['id']}{exact['amount']}{exact['currency']}{exact['invoiceId']}"
        f"{exact['errorCode']}{'true' if exact['success'] else 'false'}"
    )
    expected = base64.b64encode(
        hmac.new(CLIENT_SECRET.encode(), message.encode(), hashlib.sha256).digest()
    ).decode()
    assert hmac.compare_digest(expected, exact["signature"])
    return exact


def test_hosted_page_has_no_field_that_could_take_a_card_number(http, dna_url, receiver):
    page = parse_page(_open(http, dna_url, _payment_data(http, dna_url, receiver)).text)

    suspicious = [
        field
        for field in page.inputs
        if any(
            CARDISH.search(field.get(attr) or "") for attr in ("name", "id", "autocomplete", "type")
        )
    ]
    assert suspicious == []
    assert page.inputs == []  # card entry is simulated: no inputs at all
    assert page.lang == "en"
    assert page.h1 == ["Pay £12.50"]
    assert [b["text"] for b in page.buttons] == ["Pay £12.50", "Decline"]


def test_wallet_buttons_appear_only_when_asked_for(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver, wallets=("googlepay", {"name": "applepay"}))
    page = parse_page(_open(http, dna_url, data).text)

    assert [b["text"] for b in page.buttons] == [
        "Pay £12.50",
        "Pay with Google Pay (simulated)",
        "Pay with Apple Pay (simulated)",
        "Decline",
    ]


def test_pay_posts_a_signed_callback_then_redirects_to_return_url(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver)
    page_response = _open(http, dna_url, data)
    form = parse_page(page_response.text).forms[0]

    response = http.post(f"{dna_url}{form['action']}", data={"outcome": "card"})

    assert response.status_code == 303
    assert response.headers["location"] == "https://practice.example/pay/done"
    [callback] = receiver.wait_for(1)
    assert callback.path == "/webhooks/dna/"
    assert callback.headers["content-type"] == "application/json"
    exact = _verify_dna_signature(callback.body)
    assert exact["amount"] == "12.5"  # shortest form on the wire
    body = callback.json()
    assert body["invoiceId"] == data["invoiceId"]
    assert body["currency"] == "GBP"
    assert body["success"] is True
    assert body["settled"] is True
    assert body["errorCode"] == 0
    assert body["accountId"] == "patient-42"
    assert body["paymentMethod"] == "card"
    assert body["cardholderName"] == "Ada Lovelace"
    assert body["merchantCustomData"] == '{"payment":"p-1"}'
    assert set(body) == {
        "id", "invoiceId", "amount", "currency", "accountId", "message", "secure3D", "rrn",
        "errorCode", "success", "settled", "paymentMethod", "cardTokenId", "cardExpiryDate",
        "cardSchemeName", "cardPanStarred", "cardholderName", "merchantCustomData", "signature",
    }  # fmt: skip
    assert "*" in body["cardPanStarred"]
    assert not re.search(r"\d{13,19}", callback.body.decode())


def test_whole_amounts_are_sent_without_decimals(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver, amount="24.00")
    form = parse_page(_open(http, dna_url, data).text).forms[0]

    http.post(f"{dna_url}{form['action']}", data={"outcome": "card"})

    [callback] = receiver.wait_for(1)
    assert b'"amount":24,' in callback.body
    assert _verify_dna_signature(callback.body)["amount"] == "24"


def test_decline_goes_to_the_failure_urls(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver)
    form = parse_page(_open(http, dna_url, data).text).forms[0]

    response = http.post(f"{dna_url}{form['action']}", data={"outcome": "decline"})

    assert response.status_code == 303
    assert response.headers["location"] == "https://practice.example/pay/failed"
    [callback] = receiver.wait_for(1)
    assert callback.path == "/webhooks/dna/failure/"
    exact = _verify_dna_signature(callback.body)
    assert exact["success"] is False
    assert exact["errorCode"] == "1102"
    assert callback.json()["settled"] is False


def test_wallet_payment_reports_the_wallet(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver, wallets=("googlepay",))
    form = parse_page(_open(http, dna_url, data).text).forms[0]

    http.post(f"{dna_url}{form['action']}", data={"outcome": "googlepay"})

    [callback] = receiver.wait_for(1)
    assert callback.json()["paymentMethod"] == "googlepay"
    _verify_dna_signature(callback.body)


def test_an_auth_only_payment_is_not_settled(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver, transaction_type="AUTH")
    form = parse_page(_open(http, dna_url, data).text).forms[0]

    http.post(f"{dna_url}{form['action']}", data={"outcome": "card"})

    [callback] = receiver.wait_for(1)
    assert callback.json()["success"] is True
    assert callback.json()["settled"] is False


def test_a_session_completes_once_and_the_invoice_cannot_be_paid_twice(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver)
    form = parse_page(_open(http, dna_url, data).text).forms[0]
    http.post(f"{dna_url}{form['action']}", data={"outcome": "card"})

    again = http.post(f"{dna_url}{form['action']}", data={"outcome": "card"})
    reopened = http.get(dna.checkout_page_url(dna_url, data), follow_redirects=True)

    assert again.status_code == 409
    assert reopened.status_code == 409
    assert len(receiver.wait_for(2, timeout=0.5)) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", Decimal("99.99")), ("invoiceId", "another-invoice"), ("currency", "EUR")],
)
def test_the_token_is_bound_to_the_transaction(http, dna_url, receiver, field, value):
    data = _payment_data(http, dna_url, receiver)
    data[field] = value

    response = http.get(dna.checkout_page_url(dna_url, data), follow_redirects=True)

    assert response.status_code == 400
    assert "different invoiceId, amount, currency or terminal" in response.text


def test_a_forged_token_gets_no_page(http, dna_url, receiver):
    data = _payment_data(http, dna_url, receiver)
    data["auth"] = "not-a-token"

    response = http.get(dna.checkout_page_url(dna_url, data), follow_redirects=True)

    assert response.status_code == 401
    assert parse_page(response.text).buttons == []


def test_payment_api_js_opens_the_page_like_dnas_script(http, dna_url):
    response = http.get(f"{dna_url}/checkout/payment-api.js")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "openPaymentPage" in response.text
    assert "configure" in response.text
    assert f'"{dna_url}"' in response.text
