"""The control plane: settlement batches, fault injection, the request log, reset, redelivery."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import httpx
import pytest

from integrations.simulators import dna
from tests.simulators.conftest import CLIENT_SECRET, bearer, future, parse_page, token


def _pay(http, dna_url, amount, receiver=None):
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
    settings = {
        "terminalId": "online-1",
        "returnUrl": "https://practice.example/ok",
        "failureReturnUrl": "https://practice.example/ko",
    }
    if receiver is not None:
        settings["callbackUrl"] = receiver.url("/webhooks/dna/")
    data = {
        "invoiceId": invoice_id,
        "amount": Decimal(amount),
        "currency": "GBP",
        "paymentSettings": settings,
        "auth": access_token,
    }
    page = http.get(dna.checkout_page_url(dna_url, data), follow_redirects=True)
    http.post(f"{dna_url}{parse_page(page.text).forms[0]['action']}", data={"outcome": "card"})
    webapi = bearer(token(http, dna_url, "webapi"))
    listed = http.get(f"{dna_url}/v2/transactions/{invoice_id}/list", headers=webapi).json()
    return invoice_id, listed["data"][0]["id"]


def test_settlement_batches_unsettled_sales_and_refunds_once(http, dna_url):
    webapi = bearer(token(http, dna_url, "webapi"))
    invoice_a, sale_a = _pay(http, dna_url, "100.00")
    invoice_b, sale_b = _pay(http, dna_url, "20.00")
    refund = http.post(
        f"{dna_url}/transaction/operation/refund",
        json={"id": sale_a, "amount": "10.00"},
        headers=webapi,
    ).json()

    first = http.post(f"{dna_url}/sim/settlements")
    second = http.post(f"{dna_url}/sim/settlements")
    _, sale_c = _pay(http, dna_url, "5.00")
    third = http.post(f"{dna_url}/sim/settlements").json()

    assert first.status_code == 201
    batch = first.json()
    assert batch["currency"] == "GBP"
    assert batch["items"] == [
        {"transactionId": sale_a, "parentId": None, "invoiceId": invoice_a, "type": "sale",
         "amount": "100.00", "fee": "1.70", "currency": "GBP"},
        {"transactionId": refund["id"], "parentId": sale_a, "invoiceId": invoice_a, "type": "refund",
         "amount": "10.00", "fee": "0.00", "currency": "GBP"},
        {"transactionId": sale_b, "parentId": None, "invoiceId": invoice_b, "type": "sale",
         "amount": "20.00", "fee": "0.50", "currency": "GBP"},
    ]  # fmt: skip
    assert batch["totals"] == {
        "sales": "120.00",
        "refunds": "10.00",
        "fees": "2.20",
        "net": "107.80",
    }
    assert second.json()["items"] == []
    assert [item["transactionId"] for item in third["items"]] == [sale_c]
    listed = http.get(f"{dna_url}/sim/settlements").json()["batches"]
    assert [b["batch_id"] for b in listed] == [
        batch["batch_id"],
        second.json()["batch_id"],
        third["batch_id"],
    ]
    rows = http.get(f"{dna_url}/v2/transactions/{invoice_a}/list", headers=webapi).json()["data"]
    assert {row["settlementBatchId"] for row in rows} == {batch["batch_id"]}


def test_a_500_fault_fails_the_next_calls_without_effect(http, dna_url):
    headers = bearer(token(http, dna_url, "pay_by_link"))
    body = {
        "amount": 5,
        "currency": "GBP",
        "terminalId": "t",
        "expirationDate": future(),
        "customerName": "A",
    }
    armed = http.post(
        f"{dna_url}/sim/faults",
        json={"path_prefix": "/v1/payment-links", "mode": "500", "count": 2},
    )

    failures = [
        http.post(f"{dna_url}/v1/payment-links", json=body, headers=headers) for _ in range(2)
    ]
    success = http.post(f"{dna_url}/v1/payment-links", json=body, headers=headers)

    assert armed.status_code == 201
    assert [f.status_code for f in failures] == [500, 500]
    assert success.status_code == 201
    assert http.get(f"{dna_url}/v1/payment-links", headers=headers).json()["totalCount"] == 1
    assert http.get(f"{dna_url}/sim/faults").json()["faults"] == []


def test_a_drop_fault_closes_the_connection(http, dna_url):
    http.post(f"{dna_url}/sim/faults", json={"path_prefix": "/oauth2/", "mode": "drop", "count": 1})

    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"{dna_url}/oauth2/token", data={"grant_type": "client_credentials"})
    assert token(http, dna_url, "webapi")


def test_a_timeout_fault_makes_the_client_time_out(http, dna_url):
    http.post(
        f"{dna_url}/sim/faults",
        json={"path_prefix": "/transaction/", "mode": "timeout", "count": 1, "seconds": 2},
    )
    webapi = bearer(token(http, dna_url, "webapi"))

    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            f"{dna_url}/transaction/operation/cancel", json={"id": "x"}, headers=webapi, timeout=0.5
        )
    assert time.monotonic() - started < 2
    assert (
        http.post(
            f"{dna_url}/transaction/operation/cancel", json={"id": "x"}, headers=webapi
        ).status_code
        == 404
    )


def test_a_fault_can_target_one_method(http, dna_url):
    headers = bearer(token(http, dna_url, "pay_by_link"))
    http.post(
        f"{dna_url}/sim/faults",
        json={"path_prefix": "/v1/", "mode": "503", "count": 1, "method": "POST"},
    )

    assert http.get(f"{dna_url}/v1/payment-links", headers=headers).status_code == 200
    assert http.post(f"{dna_url}/v1/payment-links", json={}, headers=headers).status_code == 503


@pytest.mark.parametrize(
    "fault",
    [
        {"path_prefix": "v1", "mode": "500"},
        {"path_prefix": "/v1", "mode": "explode"},
        {"path_prefix": "/v1", "mode": "500", "count": 0},
    ],
)
def test_bad_faults_are_refused(http, dna_url, fault):
    assert http.post(f"{dna_url}/sim/faults", json=fault).status_code == 400


def test_request_log_keeps_no_secrets(http, dna_url):
    access_token = token(http, dna_url, "webapi")
    http.post(
        f"{dna_url}/transaction/operation/refund",
        json={"id": "x", "amount": 1},
        headers={**bearer(access_token), "Idempotency-Key": "k-1"},
    )

    log = http.get(f"{dna_url}/sim/requests").json()["requests"]
    text = str(log)

    assert [(e["method"], e["path"]) for e in log] == [
        ("POST", "/oauth2/token"),
        ("POST", "/transaction/operation/refund"),
    ]
    assert CLIENT_SECRET not in text
    assert access_token not in text
    assert log[0]["body"]["client_secret"] == "[redacted]"
    assert log[0]["body"]["scope"] == "webapi"
    assert log[1]["headers"]["authorization"] == "Bearer [redacted]"
    assert log[1]["headers"]["idempotency-key"] == "k-1"
    assert log[1]["body"] == {"id": "x", "amount": 1}
    only_oauth = http.get(f"{dna_url}/sim/requests?path_prefix=/oauth2").json()["requests"]
    assert len(only_oauth) == 1


def test_deliveries_are_logged_redacted_and_can_be_redelivered(http, dna_url, receiver):
    _pay(http, dna_url, "15.00", receiver)
    [delivery] = http.get(f"{dna_url}/sim/deliveries").json()["deliveries"]

    again = http.post(f"{dna_url}/sim/deliveries/{delivery['number']}/redeliver")

    assert delivery["kind"] == "dna_callback"
    assert delivery["status_code"] == 200
    assert delivery["body"]["cardPanStarred"] == "[redacted]"
    assert delivery["body"]["signature"] == "[redacted]"
    assert again.status_code == 201
    assert again.json()["redelivery_of"] == delivery["number"]
    first, second = receiver.wait_for(2)
    assert first.body == second.body


def test_a_delivery_to_a_dead_receiver_is_recorded_as_failed(http, dna_url, receiver):
    receiver.status = 503
    _pay(http, dna_url, "15.00", receiver)

    [delivery] = http.get(f"{dna_url}/sim/deliveries").json()["deliveries"]

    assert delivery["status_code"] == 503


def test_reset_forgets_everything(http, dna_url):
    headers = bearer(token(http, dna_url, "pay_by_link"))
    http.post(f"{dna_url}/sim/faults", json={"path_prefix": "/nowhere", "mode": "500", "count": 5})

    assert http.post(f"{dna_url}/sim/reset").status_code == 200

    assert http.get(f"{dna_url}/v1/payment-links", headers=headers).status_code == 401
    assert http.get(f"{dna_url}/sim/faults").json()["faults"] == []
    assert [e["path"] for e in http.get(f"{dna_url}/sim/requests").json()["requests"]] == [
        "/v1/payment-links",
        "/sim/faults",
    ]


def test_index_page_links_terminals_and_sessions(http, dna_url):
    _pay(http, dna_url, "9.00")

    response = http.get(f"{dna_url}/")

    assert response.status_code == 200
    assert parse_page(response.text).lang == "en"
    assert 'href="/axept/terminals/TID001"' in response.text
    assert 'href="/checkout/sessions/' in response.text
    assert "paid" in response.text


def test_unknown_paths_and_methods(http, dna_url):
    assert http.get(f"{dna_url}/nothing-here").status_code == 404
    wrong_method = http.delete(f"{dna_url}/oauth2/token")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"


def test_a_faulted_request_does_not_use_up_its_idempotency_key(http, dna_url):
    webapi = bearer(token(http, dna_url, "webapi"))
    _, sale = _pay(http, dna_url, "30.00")
    headers = {**webapi, "Idempotency-Key": "retry-after-fault"}
    http.post(
        f"{dna_url}/sim/faults",
        json={"path_prefix": "/transaction/operation/refund", "mode": "500", "count": 1},
    )

    failed = http.post(
        f"{dna_url}/transaction/operation/refund", json={"id": sale, "amount": 5}, headers=headers
    )
    retried = http.post(
        f"{dna_url}/transaction/operation/refund", json={"id": sale, "amount": 5}, headers=headers
    )

    assert failed.status_code == 500
    assert retried.status_code == 200
    assert retried.json()["refundedAmount"] == 5
    assert "idempotent-replayed" not in retried.headers
