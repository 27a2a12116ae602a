"""Pay by Link: create, read, list, cancel rules, and the status a patient's visit moves it to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.simulators.conftest import CLIENT_SECRET, bearer, future, parse_page, token

LINK_FIELDS = {
    "id", "amount", "currency", "invoiceId", "terminalId", "customerName", "description",
    "createdDate", "expirationDate", "viewedDate", "attemptedDate", "paidDate", "cancelledDate",
    "status", "url",
}  # fmt: skip


@pytest.fixture
def pbl(http, dna_url):
    return bearer(token(http, dna_url, "pay_by_link"))


def _create(http, dna_url, headers, receiver=None, **overrides):
    body = {
        "amount": 85,
        "currency": "GBP",
        "terminalId": "online-1",
        "expirationDate": future(),
        "customerName": "Ada Lovelace",
        "invoiceId": str(uuid.uuid4()),
        "description": "Hygienist visit",
    }
    if receiver is not None:
        body["paymentSettings"] = {
            "callbackUrl": receiver.url("/webhooks/dna/"),
            "failureCallbackUrl": receiver.url("/webhooks/dna/failure/"),
        }
    body.update(overrides)
    return http.post(f"{dna_url}/v1/payment-links", json=body, headers=headers)


def test_create_answers_the_documented_fields(http, dna_url, pbl):
    response = _create(http, dna_url, pbl)

    assert response.status_code == 201
    link = response.json()
    assert set(link) == LINK_FIELDS | {"transactionType", "merchantCustomData"}
    assert link["status"] == "active"
    assert link["amount"] == 85
    assert link["customerName"] == "Ada Lovelace"
    assert link["viewedDate"] is None and link["paidDate"] is None
    assert link["url"] == f"{dna_url}/checkout/link/{link['id']}/"


@pytest.mark.parametrize(
    "missing", ["amount", "currency", "terminalId", "expirationDate", "customerName"]
)
def test_required_fields(http, dna_url, pbl, missing):
    body = {
        "amount": 10,
        "currency": "GBP",
        "terminalId": "t",
        "expirationDate": future(),
        "customerName": "A",
    }
    del body[missing]

    response = http.post(f"{dna_url}/v1/payment-links", json=body, headers=pbl)

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert http.get(f"{dna_url}/v1/payment-links", headers=pbl).json()["totalCount"] == 0


def test_an_expiry_in_the_past_is_refused(http, dna_url, pbl):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert _create(http, dna_url, pbl, expirationDate=past).status_code == 400


def test_create_needs_a_token(http, dna_url):
    assert _create(http, dna_url, {}).status_code == 401


def test_get_with_and_without_trailing_slash(http, dna_url, pbl):
    link = _create(http, dna_url, pbl).json()

    with_slash = http.get(f"{dna_url}/v1/payment-links/{link['id']}/", headers=pbl)
    without = http.get(f"{dna_url}/v1/payment-links/{link['id']}", headers=pbl)
    unknown = http.get(f"{dna_url}/v1/payment-links/{uuid.uuid4()}/", headers=pbl)

    assert with_slash.json() == link
    assert without.json() == link
    assert unknown.status_code == 404


def test_opening_the_page_marks_it_viewed(http, dna_url, pbl):
    link = _create(http, dna_url, pbl).json()

    page = http.get(link["url"])

    assert page.status_code == 200
    assert parse_page(page.text).inputs == []
    after = http.get(f"{dna_url}/v1/payment-links/{link['id']}/", headers=pbl).json()
    assert after["status"] == "viewed"
    assert after["viewedDate"] is not None


def test_paying_the_link_marks_it_paid_and_sends_the_signed_callback(http, dna_url, pbl, receiver):
    link = _create(http, dna_url, pbl, receiver, merchantCustomData="link-1").json()
    http.get(link["url"])

    paid = http.post(f"{link['url']}complete", data={"outcome": "card"})

    assert paid.status_code == 200
    assert "Payment received" in paid.text
    after = http.get(f"{dna_url}/v1/payment-links/{link['id']}/", headers=pbl).json()
    assert after["status"] == "paid"
    assert after["attemptedDate"] is not None and after["paidDate"] is not None
    [callback] = receiver.wait_for(1)
    body = callback.json()
    assert body["invoiceId"] == link["invoiceId"]
    assert body["amount"] == 85
    assert body["success"] is True
    assert body["merchantCustomData"] == "link-1"
    assert body["cardholderName"] == "Ada Lovelace"
    assert body["signature"] == dna_signature_of(body)


def dna_signature_of(body):
    message = (
        f"{body['id']}{body['amount']}{body['currency']}{body['invoiceId']}{body['errorCode']}"
    )
    message += "true" if body["success"] else "false"
    return base64.b64encode(
        hmac.new(CLIENT_SECRET.encode(), message.encode(), hashlib.sha256).digest()
    ).decode()


def test_a_declined_attempt_leaves_the_link_attempted_and_payable(http, dna_url, pbl, receiver):
    link = _create(http, dna_url, pbl, receiver).json()
    http.get(link["url"])

    declined = http.post(f"{link['url']}complete", data={"outcome": "decline"})

    assert "declined" in declined.text
    after = http.get(f"{dna_url}/v1/payment-links/{link['id']}/", headers=pbl).json()
    assert after["status"] == "attempted"
    assert after["paidDate"] is None
    [callback] = receiver.wait_for(1)
    assert callback.path == "/webhooks/dna/failure/"
    assert callback.json()["success"] is False


@pytest.mark.parametrize("visits", [0, 1])
def test_cancel_while_open(http, dna_url, pbl, visits):
    link = _create(http, dna_url, pbl).json()
    for _ in range(visits):
        http.get(link["url"])

    response = http.post(f"{dna_url}/v1/payment-links/{link['id']}/cancel", headers=pbl)

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancelledDate"] is not None
    assert http.get(link["url"]).status_code == 410


def test_cancel_after_a_declined_attempt(http, dna_url, pbl):
    link = _create(http, dna_url, pbl).json()
    http.post(f"{link['url']}complete", data={"outcome": "decline"})

    response = http.post(f"{dna_url}/v1/payment-links/{link['id']}/cancel", headers=pbl)

    assert response.json()["status"] == "cancelled"


def test_a_paid_or_cancelled_link_cannot_be_cancelled(http, dna_url, pbl):
    paid = _create(http, dna_url, pbl).json()
    http.post(f"{paid['url']}complete", data={"outcome": "card"})
    cancelled = _create(http, dna_url, pbl).json()
    http.post(f"{dna_url}/v1/payment-links/{cancelled['id']}/cancel", headers=pbl)

    for link in (paid, cancelled):
        response = http.post(f"{dna_url}/v1/payment-links/{link['id']}/cancel", headers=pbl)
        assert response.status_code == 409
        assert response.json()["code"] == "link_not_cancellable"
    assert (
        http.get(f"{dna_url}/v1/payment-links/{paid['id']}/", headers=pbl).json()["status"]
        == "paid"
    )


def test_a_link_past_its_expiry_is_expired_and_closed(http, dna_url, pbl):
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    link = _create(http, dna_url, pbl, expirationDate=soon).json()
    assert link["status"] == "active"
    time.sleep(1.2)

    got = http.get(f"{dna_url}/v1/payment-links/{link['id']}/", headers=pbl).json()
    page = http.get(link["url"])
    cancel = http.post(f"{dna_url}/v1/payment-links/{link['id']}/cancel", headers=pbl)

    assert got["status"] == "expired"
    assert got["viewedDate"] is None
    assert page.status_code == 410
    assert cancel.status_code == 409


def test_list_filters_by_status(http, dna_url, pbl):
    active = _create(http, dna_url, pbl).json()
    cancelled = _create(http, dna_url, pbl).json()
    http.post(f"{dna_url}/v1/payment-links/{cancelled['id']}/cancel", headers=pbl)

    everything = http.get(f"{dna_url}/v1/payment-links", headers=pbl).json()
    only_active = http.get(f"{dna_url}/v1/payment-links?status=active", headers=pbl).json()
    open_ones = http.get(f"{dna_url}/v1/payment-links?status=active,viewed", headers=pbl).json()
    bad = http.get(f"{dna_url}/v1/payment-links?status=lost", headers=pbl)

    assert everything["totalCount"] == 2
    assert [link["id"] for link in only_active["data"]] == [active["id"]]
    assert only_active["totalCount"] == 1
    assert [link["id"] for link in open_ones["data"]] == [active["id"]]
    assert bad.status_code == 400
