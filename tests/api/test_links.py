"""The one-time pay-by-link through the API: status, single use, expiry, reissue, concurrency."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from integrations.models import OutboxMessage
from payments.links import payment_link_cancel
from payments.models import Payment, PaymentLink, PaymentState
from tests.api.conftest import link_balance
from tests.providers.conftest import forms, pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState


def _expire(link: PaymentLink) -> None:
    PaymentLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(minutes=1))


@pytest.fixture
def api(live_server):
    with httpx.Client(base_url=f"{live_server.url}/api/v1/links", timeout=15) as client:
        yield client


def test_a_link_says_what_it_is_for_and_nothing_about_the_patient(
    live, api, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient, amount="80.00")

    answer = api.get(f"/{issued.token}/")

    assert answer.status_code == 200
    body = answer.json()
    assert body == {
        "status": "active",
        "practice_name": practice.name,
        "amount": "80.00",
        "currency": "GBP",
        "invoice_reference": "INV-4242",
        "expires_at": body["expires_at"],
        "last_attempt_failed": False,
        "can_request_new_link": False,
    }
    assert patient.display_name not in answer.text and patient.email not in answer.text
    assert api.get("/not-a-real-token/").status_code == 404


def test_a_link_is_paid_once_then_refuses_further_checkouts(
    live, api, http, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient)

    checkout = api.post(f"/{issued.token}/checkout/")
    assert checkout.status_code == 200, checkout.text
    assert checkout.json()["payment_id"] == str(issued.link.payment_id)
    back = pay_on_hosted_page(http, checkout.json()["redirect_url"])

    assert back.headers["location"] == issued.url + "done/"  # the link's own "done" page
    assert api.get(f"/{issued.token}/").json()["status"] == "used"
    again = api.post(f"/{issued.token}/checkout/")
    assert again.status_code == 410
    assert again.json() == {"code": "link_unavailable", "message": "This payment link is used."}
    assert Payment.objects.get(pk=issued.link.payment_id).state == S.CAPTURED


def test_an_expired_link_cannot_be_paid_and_a_new_one_is_asked_for_once(
    live, api, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient)
    _expire(issued.link)

    status = api.get(f"/{issued.token}/").json()
    checkout = api.post(f"/{issued.token}/checkout/")
    asks = [api.post(f"/{issued.token}/reissue/") for _ in range(3)]

    assert status["status"] == "expired" and status["can_request_new_link"] is True
    assert checkout.status_code == 410
    assert checkout.json()["message"] == "This payment link is expired."
    assert [a.status_code for a in asks] == [202, 202, 202]
    assert [a.json()["requested"] for a in asks] == [True, False, False]
    assert OutboxMessage.objects.filter(event_type="payment_link.reissue_requested").count() == 1
    assert not any(r["path"].startswith("/oauth2") for r in live.requests())


def test_an_active_link_needs_no_new_one(live, api, reception_actor, practice, site, patient):
    issued = link_balance(reception_actor, practice, site, patient)

    answer = api.post(f"/{issued.token}/reissue/")

    assert answer.status_code == 202 and answer.json() == {"requested": False}
    assert not OutboxMessage.objects.filter(event_type="payment_link.reissue_requested").exists()


def test_a_cancelled_link_is_refused(live, api, reception_actor, practice, site, patient):
    issued = link_balance(reception_actor, practice, site, patient)
    payment_link_cancel(link_id=issued.link.pk, actor=reception_actor)

    assert api.get(f"/{issued.token}/").json()["status"] == "cancelled"
    answer = api.post(f"/{issued.token}/checkout/")
    assert answer.status_code == 410 and "cancelled" in answer.json()["message"]


def test_an_expired_link_balance_is_gone_from_the_app_and_pay_now_says_why(
    live, live_server, token_for, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient)
    _expire(issued.link)
    headers = {"Authorization": f"Bearer {token_for(patient)}"}

    with httpx.Client(base_url=live_server.url, headers=headers, timeout=15) as app:
        listed = app.get("/api/v1/patient/balances/").json()["balances"]
        pay = app.post(f"/api/v1/patient/balances/{issued.link.payment_id}/pay/")

    assert listed == []
    assert pay.status_code == 410 and pay.json()["code"] == "link_unavailable"


def test_concurrent_completion_of_one_link_from_app_api_and_page_gives_one_checkout_and_one_capture(
    live, live_server, token_for, reception_actor, practice, site, patient
):
    issued = link_balance(reception_actor, practice, site, patient)
    payment_id = str(issued.link.payment_id)
    app_headers = {"Authorization": f"Bearer {token_for(patient)}"}
    page = httpx.Client(timeout=15)
    csrf = forms(page.get(issued.url).text).csrf
    barrier = threading.Barrier(6)
    urls: list[str] = []

    def by_link_api():
        with httpx.Client(timeout=15) as client:
            barrier.wait()
            answer = client.post(f"{live_server.url}/api/v1/links/{issued.token}/checkout/")
            urls.append(answer.json()["redirect_url"])

    def by_app():
        with httpx.Client(timeout=15, headers=app_headers) as client:
            barrier.wait()
            answer = client.post(f"{live_server.url}/api/v1/patient/balances/{payment_id}/pay/")
            urls.append(answer.json()["redirect_url"])

    def by_page():
        barrier.wait()
        answer = page.post(issued.url, data={"csrfmiddlewaretoken": csrf})
        urls.append(answer.headers["location"])

    threads = [threading.Thread(target=fn) for fn in (by_link_api, by_link_api, by_app, by_app)]
    threads += [threading.Thread(target=by_page) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(urls) == 6 and len(set(urls)) == 1
    payment_tokens = [
        r for r in live.requests("/oauth2/token") if "payment" in r["body"]["scope"].split()
    ]
    assert len(payment_tokens) == 1  # one checkout, however many presses from wherever

    # Two devices have the hosted page open and press Pay at the same moment.
    browsers = [httpx.Client(timeout=15, follow_redirects=False) for _ in range(2)]
    opened = [b.get(urls[0], follow_redirects=True) for b in browsers]
    assert [o.status_code for o in opened] == [200, 200]
    actions = [str(o.url).split("/checkout/")[0] + forms(o.text).forms[0]["action"] for o in opened]
    press = threading.Barrier(2)
    results: list[int] = []

    def finish(browser, action):
        press.wait()
        results.append(browser.post(action, data={"outcome": "card"}).status_code)

    finishers = [
        threading.Thread(target=finish, args=pair) for pair in zip(browsers, actions, strict=True)
    ]
    for thread in finishers:
        thread.start()
    for thread in finishers:
        thread.join()
    for browser in browsers:
        browser.close()
    page.close()

    assert len(results) == 2 and sorted(results)[0] == 303  # at least one reached the return page
    payment = Payment.objects.get(pk=payment_id)
    assert payment.state == S.CAPTURED
    assert PaymentLink.objects.get(pk=issued.link.pk).status == "used"
    pms = OutboxMessage.objects.filter(payment_id=payment_id, destination="pms")
    assert pms.count() == 1
    with httpx.Client(timeout=15, headers=app_headers) as app:
        receipts = app.get(f"{live_server.url}/api/v1/patient/receipts/").json()["results"]
    assert [r["id"] for r in receipts] == [payment_id]
