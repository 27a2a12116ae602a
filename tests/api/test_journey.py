"""Pay now, end to end: the API starts DNA's hosted checkout, the simulator takes the card and
calls us back over real HTTP, and the next API read shows the balance paid and the receipt."""

from __future__ import annotations

import json

import httpx
import pytest

from integrations.models import Destination, OutboxMessage
from payments import flows
from payments.api.models import IdempotencyKey
from payments.models import Payment, PaymentLink, PaymentState
from tests.api.conftest import link_balance, online_balance
from tests.providers.conftest import has_card_number, pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState
APP_RETURN = "https://app.primoro.example/paid"


def _api(live_server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=15
    )


def test_pay_now_on_a_link_balance_through_to_captured(
    live, live_server, http, token_for, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient, amount="80.00")
    api = _api(live_server, token_for(patient))
    [balance] = api.get("/api/v1/patient/balances/").json()["balances"]

    start = api.post(f"/api/v1/patient/balances/{balance['id']}/pay/")

    assert start.status_code == 200, start.text
    checkout = start.json()
    assert checkout["payment_id"] == balance["id"]
    assert checkout["redirect_url"].startswith(live.url)
    assert checkout["payment_data"]["invoiceId"] == balance["id"]
    assert checkout["payment_data"]["amount"] == 80.0
    assert checkout["payment_data"]["paymentSettings"]["returnUrl"] == APP_RETURN
    assert patient.display_name not in start.text
    polled = api.get(f"/api/v1/patient/payments/{checkout['payment_id']}/").json()
    assert polled["status"] == "pending" and polled["state"] == "awaiting_customer_action"

    back = pay_on_hosted_page(http, checkout["redirect_url"])

    assert back.status_code == 303 and back.headers["location"] == APP_RETURN
    after = api.get(f"/api/v1/patient/payments/{checkout['payment_id']}/").json()
    assert after["status"] == "paid" and after["paid_at"] is not None
    assert api.get("/api/v1/patient/balances/").json() == {"balances": [], "total": {}}
    [receipt] = api.get("/api/v1/patient/receipts/").json()["results"]
    assert receipt["id"] == balance["id"]
    assert receipt["charged_amount"] == "80.00" and receipt["status"] == "paid"
    assert receipt["method"] == "pay_by_link"
    link = PaymentLink.objects.get(pk=issued.link.pk)
    assert link.status == "used" and link.used_at is not None
    # The link page agrees: the link is spent.
    assert http.get(issued.url).status_code == 410
    again = api.post(f"/api/v1/patient/balances/{balance['id']}/pay/")
    assert again.status_code == 409 and again.json()["code"] == "already_paid"
    pms = OutboxMessage.objects.filter(payment_id=balance["id"], destination=Destination.PMS)
    assert pms.count() == 1
    for text in (start.text, json.dumps(after), json.dumps(receipt)):
        assert not has_card_number(text)
        assert "cardPanStarred" not in text and "cardTokenId" not in text


def test_a_declined_attempt_leaves_the_balance_payable_with_a_new_attempt(
    live, live_server, http, token_for, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient, amount="30.00")
    api = _api(live_server, token_for(patient))
    balance_id = str(issued.link.payment_id)
    first = api.post(f"/api/v1/patient/balances/{balance_id}/pay/").json()

    pay_on_hosted_page(http, first["redirect_url"], outcome="decline")

    [balance] = api.get("/api/v1/patient/balances/").json()["balances"]
    assert balance["id"] == balance_id and balance["last_attempt_failed"] is True
    retry = api.post(f"/api/v1/patient/balances/{balance_id}/pay/")
    assert retry.status_code == 200
    new_id = retry.json()["payment_id"]
    assert new_id != balance_id
    assert Payment.objects.get(pk=new_id).retry_of_id == issued.link.payment_id
    pay_on_hosted_page(http, retry.json()["redirect_url"])
    assert api.get(f"/api/v1/patient/payments/{new_id}/").json()["status"] == "paid"
    assert api.get(f"/api/v1/patient/payments/{balance_id}/").json()["status"] == "failed"
    assert api.get("/api/v1/patient/balances/").json()["balances"] == []


def test_after_the_practice_retries_a_declined_link_the_app_pays_the_new_attempt(
    live, live_server, http, token_for, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient, amount="30.00")
    api = _api(live_server, token_for(patient))
    failed_id = str(issued.link.payment_id)
    first = api.post(f"/api/v1/patient/balances/{failed_id}/pay/").json()
    pay_on_hosted_page(http, first["redirect_url"], outcome="decline")

    retry = flows.payment_retry_start(payment_id=failed_id, actor=reception_actor).payment

    [balance] = api.get("/api/v1/patient/balances/").json()["balances"]
    assert balance["id"] == str(retry.id) and balance["last_attempt_failed"] is False
    start = api.post(f"/api/v1/patient/balances/{retry.id}/pay/")
    assert start.status_code == 200, start.text
    assert start.json()["payment_id"] == str(retry.id)
    stale = api.post(f"/api/v1/patient/balances/{failed_id}/pay/")
    assert stale.status_code == 409 and stale.json()["code"] == "balance_closed"
    pay_on_hosted_page(http, start.json()["redirect_url"])
    assert api.get(f"/api/v1/patient/payments/{retry.id}/").json()["status"] == "paid"
    assert api.get("/api/v1/patient/balances/").json()["balances"] == []
    assert Payment.objects.count() == 2


def test_pay_now_on_a_practice_request_with_wallets(
    live, live_server, http, token_for, reception_actor, practice, site, patient
):
    request = online_balance(reception_actor, practice, site, patient, amount="45.00")
    api = _api(live_server, token_for(patient))

    checkout = api.post(f"/api/v1/patient/balances/{request.id}/pay/").json()
    pay_on_hosted_page(http, checkout["redirect_url"], outcome="googlepay")

    assert "paymentMethods" in checkout["payment_data"]  # wallets offered (practice default)
    assert Payment.objects.get(pk=request.id).state == S.CAPTURED
    [receipt] = api.get("/api/v1/patient/receipts/").json()["results"]
    assert receipt["id"] == str(request.id) and receipt["charged_amount"] == "45.00"


def test_when_dna_is_unreachable_pay_now_says_so_and_changes_nothing(
    dna, token_for, reception_actor, practice, site, patient, settings
):
    from rest_framework.test import APIClient

    request = online_balance(reception_actor, practice, site, patient)
    dna.fault("/oauth2/token", "503", count=10)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(patient)}")

    answer = client.post(f"/api/v1/patient/balances/{request.id}/pay/", HTTP_IDEMPOTENCY_KEY="k1")

    assert answer.status_code == 503
    assert answer.json()["code"] == "provider_unavailable"
    assert Payment.objects.get(pk=request.id).state == S.INITIATED
    assert not IdempotencyKey.objects.exists()  # released: the same key may be retried
