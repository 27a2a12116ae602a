"""axept Connect terminals: auth, a pending transaction, signed outcome webhooks, status look-up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

import pytest

from tests.simulators.conftest import (
    TERMINAL_API_KEY,
    TERMINAL_KEY_ID,
    TERMINAL_SECRET,
    bearer,
    future,
    parse_page,
    token,
)

SIGNATURE_INPUT = re.compile(
    r'^sig1=(\("@method" "@target-uri" "content-digest"\);created=(\d+);keyid="([^"]+)";alg="hmac-sha256")$'
)


@pytest.fixture
def axept(http, dna_url):
    response = http.post(
        f"{dna_url}/axept/auth",
        json={"merchantId": "M1", "keyId": "K1", "key": TERMINAL_API_KEY},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token"].count(".") == 2  # JWT-shaped
    assert body["ExpiresAt"].endswith("Z")
    return bearer(body["token"])


def _start(http, dna_url, axept, receiver, *, tid="TID001", amount=42.5, uti=None):
    body = {
        "uti": uti or str(uuid.uuid4()),
        "webHookUrl": receiver.url("/webhooks/dna/terminal/?site=1"),
        "tid": tid,
        "amount": amount,
        "currency": "GBP",
        "expirationDate": future(1),
        "reference": "PAY123abc",
    }
    response = http.post(f"{dna_url}/axept/transaction", json=body, headers=axept)
    assert response.status_code == 202, response.text
    return body


def _verify_rfc9421(received, target_uri):
    """Independent verification of the webhook's HTTP Message Signature."""
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(received.body).digest()).decode() + ":"
    assert received.headers["content-digest"] == digest
    match = SIGNATURE_INPUT.match(received.headers["signature-input"])
    assert match, received.headers["signature-input"]
    params, _created, keyid = match.groups()
    assert keyid == TERMINAL_KEY_ID
    signature_base = "\n".join(
        [
            '"@method": POST',
            f'"@target-uri": {target_uri}',
            f'"content-digest": {digest}',
            f'"@signature-params": {params}',
        ]
    )
    mac = hmac.new(TERMINAL_SECRET.encode(), signature_base.encode(), hashlib.sha256).digest()
    assert received.headers["signature"] == f"sig1=:{base64.b64encode(mac).decode()}:"


def _act(http, dna_url, tid, action):
    return http.post(f"{dna_url}/axept/terminals/{tid}/action", json={"action": action})


def test_auth_with_a_wrong_key_is_refused(http, dna_url):
    response = http.post(
        f"{dna_url}/axept/auth", json={"merchantId": "M1", "keyId": "K1", "key": "x"}
    )
    assert response.status_code == 401
    assert "token" not in response.json()


def test_transaction_needs_the_axept_token(http, dna_url, receiver):
    response = http.post(f"{dna_url}/axept/transaction", json={"uti": str(uuid.uuid4())})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("action", "status", "has_transaction"),
    [
        ("approve", "approved", True),
        ("decline", "declined", True),
        ("cancel", "cancelled", False),
        ("timeout", "timed_out", False),
    ],
)
def test_outcomes_post_a_signed_webhook(
    http, dna_url, axept, receiver, action, status, has_transaction
):
    sent = _start(http, dna_url, axept, receiver)

    response = _act(http, dna_url, "TID001", action)

    assert response.status_code == 200
    assert response.json()["status"] == status
    assert response.json()["delivery"]["status_code"] == 200
    [webhook] = receiver.wait_for(1)
    assert webhook.path == "/webhooks/dna/terminal/?site=1"
    _verify_rfc9421(webhook, sent["webHookUrl"])
    body = webhook.json()
    assert body["uti"] == sent["uti"]
    assert body["tid"] == "TID001"
    assert body["status"] == status
    assert body["amount"] == 42.5
    assert body["reference"] == "PAY123abc"
    assert (body["transactionId"] is not None) is has_transaction
    assert not re.search(rb"\d{13,19}", webhook.body)
    looked_up = http.get(f"{dna_url}/axept/transaction/{sent['uti']}", headers=axept).json()
    assert looked_up["status"] == status


def test_a_tampered_body_would_not_verify(http, dna_url, axept, receiver):
    sent = _start(http, dna_url, axept, receiver)
    _act(http, dna_url, "TID001", "approve")
    [webhook] = receiver.wait_for(1)

    webhook.body = webhook.body.replace(b'"approved"', b'"declined"')

    with pytest.raises(AssertionError):
        _verify_rfc9421(webhook, sent["webHookUrl"])


@pytest.mark.parametrize(
    ("dna_config", "action"),
    [("quiet", {"action": "timeout"}), ("default", {"action": "timeout", "webhook": False})],
    indirect=["dna_config"],
)
def test_a_timeout_can_send_nothing_and_the_status_says_so(http, dna_url, axept, receiver, action):
    sent = _start(http, dna_url, axept, receiver)
    pending = http.get(f"{dna_url}/axept/transaction/{sent['uti']}", headers=axept).json()

    response = http.post(f"{dna_url}/axept/terminals/TID001/action", json=action)

    assert pending["status"] == "pending"
    assert response.json()["status"] == "timed_out"
    assert response.json()["delivery"] is None
    assert receiver.wait_for(1, timeout=0.5) == []
    looked_up = http.get(f"{dna_url}/axept/transaction/{sent['uti']}", headers=axept)
    assert looked_up.json()["status"] == "timed_out"


def test_unknown_uti_is_404_unknown(http, dna_url, axept):
    response = http.get(f"{dna_url}/axept/transaction/{uuid.uuid4()}", headers=axept)
    assert response.status_code == 404
    assert response.json()["status"] == "unknown"


def test_a_busy_terminal_refuses_a_second_transaction(http, dna_url, axept, receiver):
    first = _start(http, dna_url, axept, receiver)
    second = {**first, "uti": str(uuid.uuid4())}

    busy = http.post(f"{dna_url}/axept/transaction", json=second, headers=axept)
    same_again = http.post(f"{dna_url}/axept/transaction", json=first, headers=axept)

    assert busy.status_code == 409
    assert busy.json()["code"] == "terminal_busy"
    assert same_again.status_code == 202
    assert same_again.json()["uti"] == first["uti"]


def test_reference_must_be_at_most_50_alphanumerics(http, dna_url, axept, receiver):
    body = {
        "uti": str(uuid.uuid4()),
        "webHookUrl": receiver.url("/t"),
        "tid": "TID001",
        "amount": 1,
        "currency": "GBP",
        "expirationDate": future(1),
    }
    for reference in ("A" * 51, "has-dash", ""):
        response = http.post(
            f"{dna_url}/axept/transaction", json={**body, "reference": reference}, headers=axept
        )
        assert response.status_code == 400


def test_action_without_a_pending_transaction_is_409(http, dna_url):
    assert _act(http, dna_url, "TID001", "approve").status_code == 409


def test_an_approved_terminal_payment_can_be_refunded(http, dna_url, axept, receiver):
    _start(http, dna_url, axept, receiver, amount=20)
    _act(http, dna_url, "TID001", "approve")
    transaction_id = receiver.wait_for(1)[0].json()["transactionId"]
    webapi = bearer(token(http, dna_url, "webapi"))

    refund = http.post(
        f"{dna_url}/transaction/operation/refund",
        json={"id": transaction_id, "amount": 5},
        headers=webapi,
    )

    assert refund.status_code == 200
    assert refund.json()["invoiceId"] == "PAY123abc"


def test_terminal_page_shows_the_amount_and_four_buttons(http, dna_url, axept, receiver):
    idle = parse_page(http.get(f"{dna_url}/axept/terminals/TID001").text)
    sent = _start(http, dna_url, axept, receiver)

    page_response = http.get(f"{dna_url}/axept/terminals/TID001")
    page = parse_page(page_response.text)

    assert idle.buttons == []
    assert page.lang == "en"
    assert page.h1 == ["Terminal TID001"]
    assert "£42.50" in page_response.text
    assert sent["uti"] in page_response.text
    assert [b["value"] for b in page.buttons] == ["approve", "decline", "cancel", "timeout"]
    assert all(b["text"].strip() for b in page.buttons)
    assert page.inputs == []


def test_the_page_form_approves_and_comes_back(http, dna_url, axept, receiver):
    _start(http, dna_url, axept, receiver)

    response = http.post(f"{dna_url}/axept/terminals/TID001/action", data={"action": "approve"})

    assert response.status_code == 303
    assert response.headers["location"].endswith("/axept/terminals/TID001?done=approved")
    assert receiver.wait_for(1)[0].json()["status"] == "approved"
