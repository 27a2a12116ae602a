"""Online checkout through DNA's hosted page, driven like a browser, with real callbacks to us."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.actors import Actor
from integrations.dna import janitor
from integrations.models import Destination, OutboxMessage, WebhookEvent
from payments import flows, services
from payments.errors import PaymentError
from payments.models import Payment, PaymentState, ProviderOperation, ReasonCode, TargetType
from tests.providers.conftest import forms, has_card_number, pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState
RETURN_URL = "https://app.example/payments/return"


def _checkout(actor, practice, site, patient, amount="60.00", **extra):
    return flows.online_checkout_start(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-5001",
        amount=amount,
        return_url=RETURN_URL,
        **extra,
    )


def test_online_checkout_is_captured_through_the_hosted_page(
    live, live_server, http, practice, site, patient
):
    session = _checkout(Actor.for_patient(patient), practice, site, patient)

    payment = session.payment
    assert payment.state == S.AWAITING_CUSTOMER_ACTION
    data = session.payment_data
    assert data["invoiceId"] == str(payment.id)
    assert data["amount"] == Decimal("60.00") and data["currency"] == "GBP"
    assert data["paymentSettings"]["callbackUrl"] == f"{live_server.url}/webhooks/dna/"
    assert data["paymentSettings"]["terminalId"] == practice.dna_terminal_id
    assert data["paymentSettings"]["returnUrl"] == RETURN_URL
    assert session.script_url == f"{live.url}/checkout/payment-api.js"
    assert patient.display_name not in session.payment_data_json

    answer = pay_on_hosted_page(http, session.redirect_url)

    assert answer.status_code == 303 and answer.headers["location"] == RETURN_URL
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED and payment.captured_amount == Decimal("60.00")
    [delivery] = live.deliveries()
    assert delivery["status_code"] == 200
    assert payment.provider_reference == delivery["body"]["id"]
    event = WebhookEvent.objects.get(provider="dna")
    assert event.status == WebhookEvent.Status.PROCESSED
    assert event.event_id == f"{payment.id}:{payment.provider_reference}:charged"
    for field in ("cardTokenId", "cardPanStarred", "cardExpiryDate", "cardholderName"):
        assert field not in event.body
    assert event.body["cardSchemeName"] == "VISA"
    assert not has_card_number(event.body)
    pms = OutboxMessage.objects.filter(payment_id=payment.id, destination=Destination.PMS)
    assert pms.count() == 1


@pytest.mark.parametrize("wallets_enabled", [True, False])
def test_wallet_buttons_follow_the_practice_setting(
    dna, http, reception_actor, practice, site, patient, wallets_enabled
):
    practice.wallets_enabled = wallets_enabled
    practice.save(update_fields=["wallets_enabled"])

    session = _checkout(reception_actor, practice, site, patient)

    page = http.get(session.redirect_url, follow_redirects=True)
    labels = {b["text"] for b in forms(page.text).buttons}
    assert ("Pay with Google Pay (simulated)" in labels) is wallets_enabled
    assert ("Pay with Apple Pay (simulated)" in labels) is wallets_enabled
    assert ("paymentMethods" in session.payment_data) is wallets_enabled


def test_a_wallet_payment_is_captured(live, http, practice, site, patient):
    session = _checkout(Actor.for_patient(patient), practice, site, patient)

    pay_on_hosted_page(http, session.redirect_url, outcome="googlepay")

    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.CAPTURED


def test_a_decline_on_the_hosted_page_fails_the_payment(live, http, practice, site, patient):
    session = _checkout(Actor.for_patient(patient), practice, site, patient)

    answer = pay_on_hosted_page(http, session.redirect_url, outcome="decline")

    assert answer.headers["location"] == RETURN_URL
    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.FAILED and payment.failure_code == "declined"
    assert OutboxMessage.objects.filter(
        payment_id=payment.id, destination=Destination.TASK_MANAGER
    ).exists()


def test_an_authorisation_is_captured_on_request(
    live, http, settings, reception_actor, practice, site, patient
):
    settings.DNA_ONLINE_TRANSACTION_TYPE = "AUTH"
    session = _checkout(reception_actor, practice, site, patient, amount="120.00")
    pay_on_hosted_page(http, session.redirect_url)
    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.AUTHORISED and payment.provider_reference

    op = services.payment_request_capture(payment_id=payment.id, actor=reception_actor)

    payment.refresh_from_db()
    op.refresh_from_db()
    assert payment.state == S.CAPTURED and payment.captured_amount == Decimal("120.00")
    assert (op.operation, op.status) == ("charge", "succeeded")
    [charge] = live.requests("/transaction/operation/charge")
    assert charge["headers"]["idempotency-key"] == f"pay:{payment.id}:charge"
    assert charge["body"] == {"id": payment.provider_reference, "amount": 120}
    [sale] = live.transactions(str(payment.id))
    assert sale["status"] == "CHARGE"
    # Asking again returns the same operation; DNA is not called twice.
    again = services.payment_request_capture(payment_id=payment.id, actor=reception_actor)
    assert again.pk == op.pk and live.count("/transaction/operation/charge") == 1


def test_void_before_capture_cancels_at_dna(
    live, http, settings, reception_actor, manager_actor, practice, site, patient
):
    settings.DNA_ONLINE_TRANSACTION_TYPE = "AUTH"
    session = _checkout(reception_actor, practice, site, patient, amount="75.00")
    pay_on_hosted_page(http, session.redirect_url)

    services.payment_void(
        payment_id=session.payment.id, actor=manager_actor, reason_code=ReasonCode.BILLING_ERROR
    )

    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.VOIDED
    op = ProviderOperation.objects.get(payment=payment, operation="cancel")
    assert op.status == "succeeded"
    [sale] = live.transactions(str(payment.id))
    assert sale["status"] == "CANCEL"
    # The authorisation callback delivered again after the void changes nothing.
    live.redeliver(1)
    payment.refresh_from_db()
    assert payment.state == S.VOIDED


def test_dna_down_when_opening_a_checkout_leaves_the_payment_to_try_again(
    dna, http, reception_actor, practice, site, patient
):
    dna.fault("/oauth2/token", "503", count=2)

    with pytest.raises(flows.CheckoutUnavailable):
        _checkout(reception_actor, practice, site, patient)

    payment = Payment.objects.get()
    assert payment.state == S.INITIATED
    session = _checkout(reception_actor, practice, site, patient, payment=payment)
    assert session.payment.pk == payment.pk
    assert session.payment.state == S.AWAITING_CUSTOMER_ACTION


def test_reusing_a_payment_checks_it_is_the_same_one(dna, reception_actor, practice, site, patient):
    session = _checkout(reception_actor, practice, site, patient)

    with pytest.raises(PaymentError) as different_amount:
        _checkout(reception_actor, practice, site, patient, amount="61.00", payment=session.payment)

    assert different_amount.value.code == "invalid_amount"


def test_a_lost_callback_is_found_by_the_janitor(dna, http, practice, site, patient):
    """PUBLIC_BASE_URL is unreachable here, so DNA's callback never arrives."""
    session = _checkout(Actor.for_patient(patient), practice, site, patient)
    pay_on_hosted_page(http, session.redirect_url)
    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.AWAITING_CUSTOMER_ACTION
    assert dna.deliveries()[0]["status_code"] is None

    dna.fault("/v2/transactions/", "500", count=1)  # the janitor asks once per pass
    janitor.run()  # the look-up fails: nothing is guessed
    payment.refresh_from_db()
    assert payment.state == S.AWAITING_CUSTOMER_ACTION
    assert payment.next_check_at is not None  # asked again later, not in every pass

    janitor.run(now=payment.next_check_at)

    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    assert payment.provider_reference == dna.transactions(str(payment.id))[0]["id"]


def test_an_abandoned_checkout_fails_once_its_token_has_expired(
    dna, settings, reception_actor, practice, site, patient
):
    session = _checkout(reception_actor, practice, site, patient)
    janitor.run()
    waiting = Payment.objects.get(pk=session.payment.pk)
    assert waiting.state == S.AWAITING_CUSTOMER_ACTION

    settings.DNA_CHECKOUT_ABANDON_SECONDS = 0
    janitor.run(now=waiting.next_check_at)

    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.FAILED and payment.failure_code == "checkout_abandoned"
