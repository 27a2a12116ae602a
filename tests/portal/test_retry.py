"""Retry from the portal, one path per method, each ending with the new attempt paid through DNA."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.dna import janitor
from integrations.models import Destination, OutboxMessage
from payments import flows
from payments.models import Payment, PaymentLink, PaymentState, TargetType
from practices.roles import Role
from tests.factories import make_staff
from tests.providers.conftest import forms, pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState


def _issue(actor, practice, site, patient, **extra):
    return flows.pay_by_link_issue(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-RETRY",
        amount="80.00",
        channel="email",
        **extra,
    )


def _pay_through_page(browser, url: str, outcome: str = "card"):
    page = browser.get(url)
    assert page.status_code == 200, page.text
    to_dna = browser.post(url, data={"csrfmiddlewaretoken": forms(page.text).csrf})
    assert to_dna.status_code == 302, to_dna.text
    return pay_on_hosted_page(browser, to_dna.headers["location"], outcome=outcome)


def _deliveries():
    return OutboxMessage.objects.filter(
        destination=Destination.COMMUNICATION_HUB, event_type="payment_link.deliver"
    ).order_by("created_at")


def _history(payment):
    return list(
        AuditEvent.objects.filter(payment_id=payment.id)
        .order_by("seq")
        .values_list("event_type", "to_state")
    )


def test_retrying_a_declined_link_payment_moves_the_patients_link_to_the_new_attempt(
    live, http, client, reception, reception_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient)
    _pay_through_page(http, issued.url, outcome="decline")
    failed = Payment.objects.get()
    assert failed.state == S.FAILED
    history = _history(failed)
    client.force_login(reception)

    response = client.post(f"/payments/{failed.id}/retry/", follow=True)

    link = PaymentLink.objects.get()
    retry = link.payment
    assert retry.retry_of_id == failed.id and retry.state == S.AWAITING_CUSTOMER_ACTION
    assert response.redirect_chain[-1][0] == f"/payments/{retry.id}/"
    assert "link now pays this attempt" in response.content.decode()
    assert _deliveries().count() == 1  # the patient's message still works: nothing re-sent
    page = http.get(issued.url)
    assert page.status_code == 200 and "did not go through" not in page.text
    back = _pay_through_page(http, issued.url)
    assert back.headers["location"] == issued.url + "done/"
    link.refresh_from_db()
    retry.refresh_from_db()
    failed.refresh_from_db()
    assert retry.state == S.CAPTURED and link.status == "used"
    assert failed.state == S.FAILED and failed.failure_code == "declined"
    assert _history(failed) == history  # the failed attempt keeps its history, untouched
    assert Payment.objects.count() == 2


def test_retrying_after_the_link_expired_issues_and_sends_a_fresh_link(
    live, http, client, settings, reception, reception_actor, practice, site, patient
):
    issued = _issue(reception_actor, practice, site, patient)
    PaymentLink.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    settings.DNA_CHECKOUT_ABANDON_SECONDS = 0
    janitor.run()
    failed = Payment.objects.get()
    assert failed.state == S.FAILED and failed.failure_code == "link_expired"
    client.force_login(reception)

    response = client.post(f"/payments/{failed.id}/retry/", follow=True)

    old_link = PaymentLink.objects.get(payment=failed)
    new_link = PaymentLink.objects.exclude(pk=old_link.pk).get()
    retry = new_link.payment
    assert retry.retry_of_id == failed.id and retry.state == S.AWAITING_CUSTOMER_ACTION
    assert "A new payment link was sent to the patient." in response.content.decode()
    assert new_link.channel == "email" and new_link.expires_at > timezone.now()
    first, second = _deliveries()
    assert second.payload["link_id"] == str(new_link.id)
    assert second.payload["url"] != issued.url
    issued_event = AuditEvent.objects.get(
        event_type=EventType.PAYMENT_LINK_ISSUED, subject_id=str(new_link.id)
    )
    assert issued_event.payload["replaces_link_id"] == str(old_link.id)
    assert issued_event.actor_id == reception_actor.id
    assert http.get(issued.url).status_code == 410  # the old link stays expired
    _pay_through_page(http, second.payload["url"])
    retry.refresh_from_db()
    assert retry.state == S.CAPTURED
    assert first.payload["link_id"] == str(old_link.id)


def test_retrying_a_phone_payment_opens_a_new_session_with_dnas_card_page(
    live, http, client, practice, site, patient
):
    practice.telephony_enabled = True
    practice.save(update_fields=["telephony_enabled"])
    operator = make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=practice)
    session = flows.virtual_terminal_open(
        actor=Actor.staff(operator),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-PHONE-9",
        amount="95.00",
    )
    pay_on_hosted_page(http, session.redirect_url, outcome="decline")
    failed = Payment.objects.get()
    assert failed.state == S.FAILED
    client.force_login(operator)

    response = client.post(f"/payments/{failed.id}/retry/")

    retry = Payment.objects.get(retry_of=failed)
    assert response["Location"] == f"/payments/{retry.id}/virtual-terminal/"
    mutes = OutboxMessage.objects.filter(
        destination=Destination.TELEPHONY, event_type="call_recording.mute"
    )
    assert sorted(str(m.payment_id) for m in mutes) == sorted([str(failed.id), str(retry.id)])
    page = client.get(response["Location"]).content.decode()
    frame = re.search(
        r'<iframe title="Secure card entry provided by DNA Payments" src="([^"]+)"', page
    )
    assert frame and frame.group(1) == f"/payments/{retry.id}/virtual-terminal/card/"
    card = client.get(frame.group(1))  # the frame opens DNA's card page
    assert card.status_code == 302 and card["Location"].startswith(live.url)
    retry.refresh_from_db()
    assert retry.state == S.AWAITING_CUSTOMER_ACTION and retry.moto
    pay_on_hosted_page(http, card["Location"])
    retry.refresh_from_db()
    assert retry.state == S.CAPTURED


def test_an_online_checkout_is_not_retried_by_staff(
    live, http, client, reception, practice, site, patient
):
    session = flows.online_checkout_start(
        actor=Actor.for_patient(patient),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-ONLINE-1",
        amount="60.00",
        return_url="https://app.example/return",
    )
    pay_on_hosted_page(http, session.redirect_url, outcome="decline")
    failed = Payment.objects.get()
    client.force_login(reception)

    detail = client.get(f"/payments/{failed.id}/").content.decode()
    response = client.post(f"/payments/{failed.id}/retry/", follow=True)

    assert failed.state == S.FAILED and "Failed" in detail
    assert "Retry payment" not in detail
    assert response.redirect_chain[-1][0] == f"/payments/{failed.id}/"
    assert "they pay again from the app" in response.content.decode()
    assert Payment.objects.count() == 1


def test_a_retry_is_due_when_the_failed_attempt_was(
    live, client, settings, reception, reception_actor, practice, site, patient
):
    due_at = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    _issue(reception_actor, practice, site, patient, due_at=due_at)
    PaymentLink.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    settings.DNA_CHECKOUT_ABANDON_SECONDS = 0
    janitor.run()
    failed = Payment.objects.get()
    assert failed.state == S.FAILED and failed.due_at == due_at
    client.force_login(reception)

    client.post(f"/payments/{failed.id}/retry/")

    retry = Payment.objects.get(retry_of=failed)
    assert retry.due_at == due_at  # still owed from the same day: reminders follow it
    carried = AuditEvent.objects.get(payment_id=retry.id, event_type=EventType.PAYMENT_DUE_DATE_SET)
    assert carried.payload["carried_from_payment_id"] == str(failed.id)
    assert carried.actor_id == reception_actor.id
    fresh = PaymentLink.objects.get(payment=retry)
    last_reminder = due_at + timedelta(days=practice.reminder_days()[-1])
    assert fresh.expires_at >= last_reminder  # the reminders never point at a dead link
