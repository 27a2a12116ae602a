"""GoCardless: signed scenario webhooks of the documented shape, and an API that only reads."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integrations.simulators import gocardless

SECRET = "gc-webhook-secret-for-tests"
API_HEADERS = {"Authorization": "Bearer gc-test-token", "GoCardless-Version": "2015-07-06"}
ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "payment_confirmed": [("payments", "confirmed", "payment_confirmed", "gocardless")],
    "payment_paid_out": [
        ("payments", "paid_out", "payment_paid_out", "gocardless"),
        ("payouts", "paid", "payout_paid", "gocardless"),
    ],
    "payment_failed": [("payments", "failed", "insufficient_funds", "bank")],
    "payment_charged_back": [("payments", "charged_back", "authorisation_disputed", "bank")],
    "mandate_cancelled": [("mandates", "cancelled", "mandate_cancelled", "bank")],
    "mandate_active": [("mandates", "active", "mandate_activated", "gocardless")],
    "mandate_failed": [("mandates", "failed", "invalid_bank_details", "bank")],
    "mandate_expired": [("mandates", "expired", "mandate_expired", "gocardless")],
    "mandate_blocked": [("mandates", "blocked", "mandate_blocked", "gocardless")],
}


@pytest.mark.parametrize("scenario", gocardless.SCENARIOS)
def test_each_scenario_is_signed_and_shaped_like_gocardless(scenario, receiver):
    _, delivery = gocardless.send_scenario(
        scenario,
        url=receiver.url("/webhooks/gocardless/"),
        secret=SECRET,
        payment_id="PM0001SIMTEST",
        mandate_id="MD0001SIMTEST",
    )

    [received] = receiver.wait_for(1)
    assert delivery.status_code == 200
    assert (
        received.headers["webhook-signature"]
        == hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    )
    assert received.headers["origin"] == "https://api.gocardless.com"
    assert received.headers["content-type"] == "application/json"
    body = json.loads(received.body)
    assert set(body) == {"events", "meta"}
    assert body["meta"]["webhook_id"].startswith("WB")
    shape = [
        (e["resource_type"], e["action"], e["details"]["cause"], e["details"]["origin"])
        for e in body["events"]
    ]
    assert shape == EXPECTED[scenario]
    for event in body["events"]:
        assert set(event) == {
            "id",
            "created_at",
            "action",
            "resource_type",
            "links",
            "details",
            "metadata",
        }
        assert event["id"].startswith("EV")
        assert event["created_at"].endswith("Z")
        assert event["details"]["description"]
        assert event["metadata"] == {}
    first = body["events"][0]
    if scenario.startswith("payment_"):
        assert first["links"]["payment"] == "PM0001SIMTEST"
    else:
        assert first["links"] == {"mandate": "MD0001SIMTEST"}


def test_bank_events_carry_scheme_and_reason_code(receiver):
    _, _ = gocardless.send_scenario("payment_failed", url=receiver.url("/"), secret=SECRET)
    [received] = receiver.wait_for(1)
    details = json.loads(received.body)["events"][0]["details"]

    assert details == {
        "origin": "bank",
        "cause": "insufficient_funds",
        "scheme": "bacs",
        "reason_code": "ARUDD-0",
        "description": "The customer's account had insufficient funds to make this payment.",
        "will_attempt_retry": False,
    }


def test_paid_out_links_the_payout_and_the_api_gives_the_fees(receiver, gc_url, http):
    scenario, _ = gocardless.send_scenario(
        "payment_paid_out",
        url=receiver.url("/webhooks/gocardless/"),
        secret=SECRET,
        api_url=gc_url,
        amount=5000,
        mandate_ref="PMREF-0042",
    )
    paid_out, payout_paid = scenario.events
    payout_id = paid_out["links"]["payout"]
    payment_id = paid_out["links"]["payment"]

    payment = http.get(f"{gc_url}/payments/{payment_id}", headers=API_HEADERS)
    payout = http.get(f"{gc_url}/payouts/{payout_id}", headers=API_HEADERS).json()["payouts"]
    items = http.get(
        f"{gc_url}/payout_items", params={"payout": payout_id}, headers=API_HEADERS
    ).json()
    mandate_id = payment.json()["payments"]["links"]["mandate"]
    mandate = http.get(f"{gc_url}/mandates/{mandate_id}", headers=API_HEADERS).json()["mandates"]

    assert payout_paid["links"] == {"payout": payout_id}
    assert payment.status_code == 200
    assert payment.headers["ratelimit-limit"] == "1000"
    assert payment.json()["payments"]["status"] == "paid_out"
    assert payment.json()["payments"]["amount"] == 5000
    assert payment.json()["payments"]["links"]["payout"] == payout_id
    assert mandate["reference"] == "PMREF-0042"
    assert mandate["status"] == "active"
    assert payout["deducted_fees"] == 109  # 70p + 14p VAT + 25p app fee
    assert payout["amount"] == 5000 - 109
    assert payout["status"] == "paid"
    assert [(i["type"], i["amount"]) for i in items["payout_items"]] == [
        ("payment_paid_out", "5000"),
        ("gocardless_fee", "-84"),
        ("app_fee", "-25"),
    ]
    assert items["payout_items"][1]["taxes"][0]["amount"] == "-14"
    assert all(i["links"]["payment"] == payment_id for i in items["payout_items"])


def test_fee_is_capped():
    assert gocardless.gocardless_fee(100_000) == (480, 80)
    assert gocardless.gocardless_fee(1000) == (36, 6)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "path", ["/payments", "/payments/PM123", "/mandates/MD123/actions/cancel", "/payouts"]
)
def test_the_api_never_writes(gc_url, http, method, path):
    response = http.request(method, f"{gc_url}{path}", headers=API_HEADERS, json={})

    assert response.status_code == 405
    assert response.json()["error"]["errors"][0]["reason"] == "method_not_allowed"


def test_the_api_needs_a_token_and_a_version(gc_url, http):
    no_token = http.get(f"{gc_url}/payments/PM123", headers={"GoCardless-Version": "2015-07-06"})
    wrong_token = http.get(
        f"{gc_url}/payments/PM123", headers={**API_HEADERS, "Authorization": "Bearer no"}
    )
    no_version = http.get(
        f"{gc_url}/payments/PM123", headers={"Authorization": "Bearer gc-test-token"}
    )
    missing = http.get(f"{gc_url}/payments/PM123", headers=API_HEADERS)

    assert no_token.status_code == 401
    assert wrong_token.status_code == 401
    assert no_version.status_code == 400
    assert missing.status_code == 404
    assert missing.json()["error"]["errors"][0]["reason"] == "resource_not_found"


def test_payout_items_need_a_payout(gc_url, http):
    assert http.get(f"{gc_url}/payout_items", headers=API_HEADERS).status_code == 422


def test_command_line_send(receiver, gc_url):
    env = {**os.environ, "GOCARDLESS_WEBHOOK_SECRET": SECRET}
    result = subprocess.run(
        [
            sys.executable, "-m", "integrations.simulators.gocardless", "send", "payment_confirmed",
            "--url", receiver.url("/webhooks/gocardless/"), "--payment-id", "PM0002SIMTEST",
            "--mandate-ref", "REF-9", "--api-url", gc_url,
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "payments.confirmed" in result.stdout
    assert "-> 200" in result.stdout
    [received] = receiver.wait_for(1)
    assert (
        received.headers["webhook-signature"]
        == hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    )
    assert json.loads(received.body)["events"][0]["links"] == {"payment": "PM0002SIMTEST"}


def test_command_line_reports_a_rejected_webhook(receiver):
    receiver.status = 498
    result = subprocess.run(
        [
            sys.executable, "-m", "integrations.simulators.gocardless", "send", "mandate_active",
            "--url", receiver.url("/"), "--secret", "wrong", "--no-api",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert "-> 498" in result.stdout
