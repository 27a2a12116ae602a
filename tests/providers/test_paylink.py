"""Pay-by-link: our own one-time page, DNA's hosted checkout, single use and expiry."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.dna import janitor
from integrations.models import Destination, OutboxMessage
from payments import balances, flows, services
from payments.links import payment_link_cancel
from payments.models import Payment, PaymentLink, PaymentState, TargetType
from tests.api.conftest import random_ip
from tests.providers.conftest import forms, pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState


def _issue(actor, practice, site, patient, *, channel="app", amount="80.00"):
    return flows.pay_by_link_issue(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-4242",
        amount=amount,
        channel=channel,
    )


def _press_pay_now(browser: httpx.Client, url: str) -> httpx.Response:
    page = browser.get(url)
    assert page.status_code == 200, page.text
    return browser.post(url, data={"csrfmiddlewaretoken": forms(page.text).csrf})


def _expire(link: PaymentLink) -> None:
    """Time passes: the link's expiry is now behind us."""
    PaymentLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(minutes=1))


def _pms_rows(payment_id):
    return OutboxMessage.objects.filter(payment_id=payment_id, destination=Destination.PMS)


def test_issuing_a_link_stores_only_its_hash_and_asks_for_delivery(
    live, live_server, reception_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient, channel="email")

    link = PaymentLink.objects.get()
    assert link.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token not in str(PaymentLink.objects.values().get())
    assert issued.url == f"{live_server.url}/pay/{issued.token}/"
    assert link.payment.method == "pay_by_link"
    assert link.payment.state == S.AWAITING_CUSTOMER_ACTION
    expected_expiry = timezone.now() + timedelta(hours=practice.payment_link_ttl_hours)
    assert abs((link.expires_at - expected_expiry).total_seconds()) < 60
    message = OutboxMessage.objects.get(
        destination=Destination.COMMUNICATION_HUB, event_type="payment_link.deliver"
    )
    assert message.payload["url"] == issued.url
    assert message.payload["amount"] == "80.00"
    assert message.payload["practice_name"] == practice.name
    assert message.payload["channels"] == ["email", "app", "sms"]
    assert patient.display_name not in str(message.payload)
    audit = AuditEvent.objects.get(event_type=EventType.PAYMENT_LINK_ISSUED)
    assert audit.payment_id == link.payment_id and audit.actor_id == reception_actor.id


def test_the_public_page_shows_the_payment_and_nothing_clinical(
    live, http, reception_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient)

    page = http.get(issued.url)

    assert page.status_code == 200
    text = page.text
    assert '<html lang="en-GB">' in text
    assert f"<h1>Pay {practice.name}</h1>" in text
    assert "£80.00" in text and "INV-4242" in text
    assert PaymentLink.objects.get().expires_at.strftime("%Y") in text
    assert patient.display_name not in text and patient.email not in text
    assert "invoice" not in issued.url.lower()
    [button] = forms(text).buttons
    assert "Pay now" in button["text"]
    assert page.headers["Cache-Control"].startswith("max-age=0")
    assert page.headers["Referrer-Policy"] == "same-origin"


def test_paying_through_the_link_captures_and_uses_it(
    live, http, reception_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient)

    to_dna = _press_pay_now(http, issued.url)

    assert to_dna.status_code == 302 and to_dna.headers["location"].startswith(live.url)
    back = pay_on_hosted_page(http, to_dna.headers["location"])
    assert back.headers["location"] == issued.url + "done/"
    done = http.get(back.headers["location"])
    assert done.status_code == 200 and "Payment received" in done.text
    link = PaymentLink.objects.get()
    assert link.status == "used" and link.used_at == link.payment.captured_at
    assert link.payment.state == S.CAPTURED
    assert _pms_rows(link.payment_id).count() == 1
    again = http.get(issued.url)
    assert again.status_code == 410 and "already been made" in again.text
    assert "new link" not in again.text


def test_an_expired_link_says_so_and_a_new_one_can_be_asked_for_once(
    live, live_server, http, reception_actor, practice, site, patient, settings
):
    issued = _issue(reception_actor, practice, site, patient)
    page = http.get(issued.url)
    csrf = forms(page.text).csrf
    _expire(PaymentLink.objects.get())

    expired = http.get(issued.url)
    start = http.post(issued.url, data={"csrfmiddlewaretoken": csrf})

    assert expired.status_code == 410 and "has expired" in expired.text
    assert start.status_code == 410
    [reissue_form] = forms(expired.text).forms
    assert reissue_form["action"] == f"/pay/{issued.token}/reissue/"
    asks = [
        http.post(f"{live_server.url}{reissue_form['action']}", data={"csrfmiddlewaretoken": csrf})
        for _ in range(3)
    ]
    assert [a.status_code for a in asks] == [202, 202, 202]
    assert "asked the practice" in asks[0].text
    [task] = OutboxMessage.objects.filter(event_type="payment_link.reissue_requested")
    assert task.destination == Destination.TASK_MANAGER
    assert task.payload["link_status"] == "expired"
    assert not any(r["path"].startswith("/oauth2") for r in live.requests())

    settings.DNA_CHECKOUT_ABANDON_SECONDS = 0
    janitor.run()
    link = PaymentLink.objects.get()
    assert link.status == "expired"
    assert link.payment.state == S.FAILED and link.payment.failure_code == "link_expired"


def test_a_cancelled_link_says_so(live, http, reception_actor, practice, site, patient):
    issued = _issue(reception_actor, practice, site, patient)

    payment_link_cancel(link_id=PaymentLink.objects.get().pk, actor=reception_actor)

    page = http.get(issued.url)
    assert page.status_code == 410 and "has been cancelled" in page.text
    assert Payment.objects.get().state == S.VOIDED


def test_an_unknown_token_is_not_found(live, live_server, http):
    response = http.get(f"{live_server.url}/pay/not-a-real-token/")

    assert response.status_code == 404 and "could not find" in response.text


def test_double_submit_and_duplicate_callbacks_capture_once(
    live, live_server, reception_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient)
    browsers = [httpx.Client(timeout=15) for _ in range(4)]
    tokens = [forms(b.get(issued.url).text).csrf for b in browsers]
    barrier = threading.Barrier(len(browsers))
    locations: list[str] = []

    def press(browser, csrf):
        barrier.wait()
        answer = browser.post(issued.url, data={"csrfmiddlewaretoken": csrf})
        locations.append(answer.headers.get("location", str(answer.status_code)))

    threads = [
        threading.Thread(target=press, args=pair) for pair in zip(browsers, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(locations)) == 1 and locations[0].startswith(live.url)
    payment_tokens = [
        r for r in live.requests("/oauth2/token") if "payment" in r["body"]["scope"].split()
    ]
    assert len(payment_tokens) == 1  # one checkout for the link, however many presses

    pay_on_hosted_page(browsers[0], locations[0])
    again = browsers[1].post(issued.url, data={"csrfmiddlewaretoken": tokens[1]})
    live.redeliver(1)
    live.redeliver(1)
    for browser in browsers:
        assert "Payment received" in browser.get(issued.url + "done/").text
        browser.close()

    link = PaymentLink.objects.get()
    assert again.status_code == 410
    assert link.status == "used" and link.payment.state == S.CAPTURED
    assert Payment.objects.count() == 1
    assert _pms_rows(link.payment_id).count() == 1
    assert link.payment.captured_amount == Decimal("80.00")


def test_a_declined_attempt_can_be_retried_with_the_same_link(
    live, http, reception_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient)
    to_dna = _press_pay_now(http, issued.url)
    pay_on_hosted_page(http, to_dna.headers["location"], outcome="decline")
    first = Payment.objects.get()
    assert first.state == S.FAILED

    page = http.get(issued.url)
    assert page.status_code == 200 and "did not go through" in page.text
    second_try = http.post(issued.url, data={"csrfmiddlewaretoken": forms(page.text).csrf})
    pay_on_hosted_page(http, second_try.headers["location"])

    link = PaymentLink.objects.get()
    assert link.payment_id != first.pk and link.payment.retry_of_id == first.pk
    assert link.payment.state == S.CAPTURED and link.status == "used"


def test_with_dnas_script_the_page_opens_the_hosted_page_itself(
    live, http, settings, reception_actor, practice, site, patient
):
    settings.DNA_CHECKOUT_MODE = "script"
    issued = _issue(reception_actor, practice, site, patient, amount="80.50")

    page = _press_pay_now(http, issued.url)

    assert page.status_code == 200
    assert f'<script src="{live.url}/checkout/payment-api.js"></script>' in page.text
    blob = page.text.split('id="dna-payment-data">')[1].split("</script>")[0]
    data = json.loads(blob, parse_float=Decimal)
    payment = Payment.objects.get()
    assert data["invoiceId"] == str(payment.id) and data["amount"] == Decimal("80.5")
    assert data["auth"]["access_token"]
    assert "window.DNAPayments.openPaymentPage(data)" in page.text


def test_coming_back_before_the_callback_asks_dna(
    dna, client, reception_actor, practice, site, patient
):
    """The callback is lost (PUBLIC_BASE_URL unreachable); the done page asks DNA itself."""
    issued = _issue(reception_actor, practice, site, patient)
    path = issued.url.removeprefix("http://testserver")
    to_dna = client.post(path)
    with httpx.Client(timeout=15) as browser:
        pay_on_hosted_page(browser, to_dna["location"])
    assert Payment.objects.get().state == S.AWAITING_CUSTOMER_ACTION

    first = client.get(path + "done/")
    second = client.get(path + "done/")

    assert "Confirming your payment" in first.content.decode()
    assert "Payment received" in second.content.decode()
    link = PaymentLink.objects.get()
    assert link.payment.state == S.CAPTURED and link.status == "used"


def test_voiding_a_link_payment_cancels_its_link_in_the_same_step(
    live, http, reception_actor, manager_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient)
    page = http.get(issued.url)
    csrf = forms(page.text).csrf
    link = PaymentLink.objects.get()

    services.payment_void(
        payment_id=link.payment_id, actor=manager_actor, reason_code="patient_request"
    )

    link.refresh_from_db()
    assert link.status == "cancelled" and link.payment.state == S.VOIDED
    voided = AuditEvent.objects.get(event_type=EventType.PAYMENT_VOIDED)
    assert voided.payload["payment_link"] == {"id": str(link.id), "status": "cancelled"}
    assert voided.actor_id == manager_actor.id
    shown = http.get(issued.url)
    pressed = http.post(issued.url, data={"csrfmiddlewaretoken": csrf})
    assert shown.status_code == 410 and "has been cancelled" in shown.text
    assert "Pay now" not in shown.text
    assert pressed.status_code == 410 and "has been cancelled" in pressed.text
    checkouts = [
        r for r in live.requests("/oauth2/token") if "payment" in r["body"]["scope"].split()
    ]
    assert checkouts == []  # no checkout was opened for the voided payment


def test_a_link_whose_attempt_was_already_retried_elsewhere_answers_with_a_page(
    live, http, reception_actor, practice, site, patient
):
    """A retry made outside the link (the old portal path) used to make Pay now a 500."""
    issued = _issue(reception_actor, practice, site, patient)
    to_dna = _press_pay_now(http, issued.url)
    pay_on_hosted_page(http, to_dna.headers["location"], outcome="decline")
    failed = Payment.objects.get()
    services.payment_retry(payment_id=failed.id, actor=reception_actor)
    page = http.get(issued.url)

    pressed = http.post(issued.url, data={"csrfmiddlewaretoken": forms(page.text).csrf})

    assert pressed.status_code == 400
    assert "This payment cannot be made with this link" in pressed.text
    assert practice.name in pressed.text and "Traceback" not in pressed.text
    assert PaymentLink.objects.get().payment_id == failed.id
    assert Payment.objects.count() == 2


def test_a_link_left_active_on_a_voided_payment_answers_with_a_page(
    live, http, reception_actor, manager_actor, practice, site, patient
):
    """A void made before voids cancelled links left the link active: Pay now was a 500."""
    issued = _issue(reception_actor, practice, site, patient)
    csrf = forms(http.get(issued.url).text).csrf
    services.payment_void(
        payment_id=Payment.objects.get().id, actor=manager_actor, reason_code="other"
    )
    PaymentLink.objects.update(status="active")  # the row as such a void left it

    shown = http.get(issued.url)
    pressed = http.post(issued.url, data={"csrfmiddlewaretoken": csrf})

    assert shown.status_code == 410 and "has been cancelled" in shown.text
    assert pressed.status_code == 410 and "has been cancelled" in pressed.text


def test_a_practice_link_lifetime_other_than_a_day_is_honoured(
    dna, reception_actor, practice, site, patient, settings
):
    practice.payment_link_ttl_hours = 3
    practice.save(update_fields=["payment_link_ttl_hours"])
    before = timezone.now()

    issued = _issue(reception_actor, practice, site, patient)

    link = PaymentLink.objects.get()
    assert before + timedelta(hours=3) <= link.expires_at <= timezone.now() + timedelta(hours=3)
    [delivery] = OutboxMessage.objects.filter(event_type="payment_link.deliver")
    assert delivery.payload["expires_at"] == link.expires_at.isoformat()
    just_before = link.expires_at - timedelta(minutes=1)
    just_after = link.expires_at + timedelta(minutes=1)
    assert [b.id for b in balances.balances_for(patient, now=just_before)] == [link.payment_id]
    assert balances.balances_for(patient, now=just_after) == []
    settings.DNA_CHECKOUT_ABANDON_SECONDS = 0
    janitor.run(now=just_before)
    assert Payment.objects.get().state == S.AWAITING_CUSTOMER_ACTION
    janitor.run(now=just_after)
    payment = Payment.objects.get()
    assert payment.state == S.FAILED and payment.failure_code == "link_expired"
    assert issued.link.pk == link.pk


def test_the_public_pages_are_rate_limited_per_address(
    dna, client, settings, reception_actor, practice, site, patient
):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "link": "3/min"}
    issued = _issue(reception_actor, practice, site, patient)
    path = issued.url.removeprefix("http://testserver")
    prober, neighbour = random_ip(), random_ip()

    answers = [client.get(f"/pay/guess-{n}/", REMOTE_ADDR=prober) for n in range(2)]
    answers.append(client.post("/pay/guess-3/reissue/", REMOTE_ADDR=prober))
    blocked = client.get(path, REMOTE_ADDR=prober)
    api_too = client.get(f"/api/v1/links/{issued.token}/", REMOTE_ADDR=prober)

    assert [a.status_code for a in answers] == [404, 404, 404]
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) > 0
    assert "Too many attempts" in blocked.content.decode()
    assert blocked["Content-Type"].startswith("text/html")
    assert api_too.status_code == 429  # one budget per address, page and app alike
    assert client.get(path, REMOTE_ADDR=neighbour).status_code == 200


def test_starting_a_checkout_from_the_page_counts_against_the_pay_limit(
    dna, client, settings, reception_actor, practice, site, patient
):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "pay_ip": "1/min"}
    issued = _issue(reception_actor, practice, site, patient)
    path = issued.url.removeprefix("http://testserver")
    address = random_ip()

    shown = [client.get(path, REMOTE_ADDR=address) for _ in range(3)]
    first = client.post(path, REMOTE_ADDR=address)
    second = client.post(path, REMOTE_ADDR=address)

    assert [s.status_code for s in shown] == [200, 200, 200]  # reading is not paying
    assert first.status_code == 302 and first["Location"].startswith(dna.url)
    assert second.status_code == 429 and "Too many attempts" in second.content.decode()
    payment_tokens = [
        r for r in dna.requests("/oauth2/token") if "payment" in r["body"]["scope"].split()
    ]
    assert len(payment_tokens) == 1
