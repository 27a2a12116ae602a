"""The virtual terminal: MOTO checkout in DNA's embedded page; call recording muted exactly while
card entry is open (each opening mutes once, each closing unmutes once)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.dna import janitor
from integrations.models import Destination, OutboxMessage
from integrations.simulators import dna as dna_sim
from payments import flows
from payments.models import Payment, PaymentState, TargetType
from practices.access import NotPermitted
from tests.providers.conftest import forms, pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState


def _open(actor, practice, site, patient):
    return flows.virtual_terminal_open(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-PHONE-1",
        amount="95.00",
    )


def _telephony(event_type=None):
    rows = OutboxMessage.objects.filter(destination=Destination.TELEPHONY)
    return rows.filter(event_type=event_type) if event_type else rows


def _session_steps(payment):
    return list(
        AuditEvent.objects.filter(
            payment_id=payment.id, event_type=EventType.VIRTUAL_TERMINAL_SESSION
        )
        .order_by("seq")
        .values_list("payload__action", flat=True)
    )


@pytest.fixture
def telephony(practice):
    practice.telephony_enabled = True
    practice.save(update_fields=["telephony_enabled"])
    return practice


def test_mute_and_unmute_exactly_once_each_when_telephony_is_enabled(
    live, http, telephony, site, patient, vt_operator
):
    session = _open(Actor.staff(vt_operator), telephony, site, patient)

    payment = session.payment
    assert payment.moto and payment.state == S.AWAITING_CUSTOMER_ACTION
    [mute] = _telephony("call_recording.mute")
    assert mute.payload["payment_id"] == str(payment.id)
    assert mute.payload["staff_id"] == str(vt_operator.pk)
    assert mute.payload["site_id"] == str(site.id)
    assert not _telephony("call_recording.unmute").exists()
    assert json.loads(session.payment_data["merchantCustomData"])["channel"] == "moto"
    assert "paymentMethods" not in session.payment_data  # card only, by phone
    [token] = [r for r in live.requests("/oauth2/token") if "payment" in r["body"]["scope"]]
    assert token["body"]["scope"] == "payment integration_embedded"

    pay_on_hosted_page(http, session.redirect_url)  # what the caller reads out, typed at DNA
    live.redeliver(1)

    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    [unmute] = _telephony("call_recording.unmute")
    assert unmute.payload["payment_id"] == str(payment.id)
    assert _telephony().count() == 2
    assert _session_steps(payment) == ["opened", "closed"]
    assert (
        flows.virtual_terminal_close(
            payment_id=payment.id, actor=Actor.staff(vt_operator), reason="completed"
        )
        is False
    )
    assert _telephony().count() == 2


def test_no_telephony_messages_when_telephony_is_disabled(
    live, http, practice, site, patient, vt_operator
):
    session = _open(Actor.staff(vt_operator), practice, site, patient)
    pay_on_hosted_page(http, session.redirect_url)

    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.CAPTURED
    assert not _telephony().exists()
    assert _session_steps(payment) == ["opened", "closed"]


def test_closing_by_hand_first_means_the_outcome_does_not_unmute_again(
    live, http, telephony, site, patient, vt_operator
):
    actor = Actor.staff(vt_operator)
    session = _open(actor, telephony, site, patient)

    closed = flows.virtual_terminal_close(
        payment_id=session.payment.id, actor=actor, reason="cancelled"
    )
    pay_on_hosted_page(http, session.redirect_url)

    assert closed is True
    assert _telephony("call_recording.unmute").count() == 1
    assert _session_steps(session.payment) == ["opened", "closed"]
    closing = AuditEvent.objects.filter(
        payment_id=session.payment.id, event_type=EventType.VIRTUAL_TERMINAL_SESSION
    ).last()
    assert closing.payload["reason"] == "cancelled" and closing.actor_kind == "staff"


def test_the_virtual_terminal_is_refused_without_the_permission(
    live, telephony, site, patient, reception_actor
):
    with pytest.raises(NotPermitted):
        _open(reception_actor, telephony, site, patient)

    assert not Payment.objects.exists()
    assert not _telephony().exists()
    assert not AuditEvent.objects.filter(event_type=EventType.VIRTUAL_TERMINAL_SESSION).exists()
    assert live.requests() == []


# --- the staff page: DNA's script in the card frame, the session's real mute state ---------------


def _page(client, payment) -> str:
    return client.get(f"/payments/{payment.id}/virtual-terminal/").content.decode()


def _frame_src(page: str) -> str | None:
    found = re.search(
        r'<iframe title="Secure card entry provided by DNA Payments" src="([^"]+)"', page
    )
    return found.group(1) if found else None


def test_in_script_mode_the_card_frame_opens_dnas_page_with_dnas_script(
    live, http, client, settings, telephony, site, patient, vt_operator
):
    settings.DNA_CHECKOUT_MODE = "script"  # production: DNA's payment-api.js opens the page
    session = _open(Actor.staff(vt_operator), telephony, site, patient)
    assert session.redirect_url is None
    client.force_login(vt_operator)

    page = _page(client, session.payment)
    card = client.get(_frame_src(page))

    assert "Call recording is paused" in page
    assert card.status_code == 200 and card["X-Frame-Options"] == "SAMEORIGIN"
    html = card.content.decode()
    assert f'<script src="{live.url}/checkout/payment-api.js"></script>' in html
    assert "window.DNAPayments.openPaymentPage(data)" in html
    assert not re.search(r"<input|<form", html)  # no card field of ours
    data = json.loads(
        html.split('id="dna-payment-data">')[1].split("</script>")[0], parse_float=Decimal
    )
    assert data["invoiceId"] == str(session.payment.id) and data["amount"] == Decimal("95")
    assert json.loads(data["merchantCustomData"])["channel"] == "moto"
    [*_, token] = [r for r in live.requests("/oauth2/token") if "payment" in r["body"]["scope"]]
    assert token["body"]["scope"] == "payment integration_embedded"
    # What DNA's script does with that data: the simulator serves the script and the page.
    script = http.get(f"{live.url}/checkout/payment-api.js")
    assert script.status_code == 200 and "openPaymentPage" in script.text
    pay_on_hosted_page(http, dna_sim.checkout_page_url(live.url, data))

    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.CAPTURED and payment.moto
    assert [m.event_type for m in _telephony().order_by("created_at")] == [
        "call_recording.mute",
        "call_recording.unmute",
    ]


def test_the_banner_follows_the_session_and_reopening_mutes_again(
    live, http, client, telephony, site, patient, vt_operator
):
    session = _open(Actor.staff(vt_operator), telephony, site, patient)
    payment = session.payment
    client.force_login(vt_operator)
    assert "Call recording is paused" in _page(client, payment)

    client.post(f"/payments/{payment.id}/virtual-terminal/close/")
    closed_page = _page(client, payment)
    tokens_before = live.count("/oauth2/token")
    refused = client.get(f"/payments/{payment.id}/virtual-terminal/card/")

    assert "Call recording is paused" not in closed_page
    assert _frame_src(closed_page) is None
    assert "Card entry is closed and call recording has resumed" in closed_page
    assert "Reopen card entry" in closed_page
    assert refused.status_code == 409 and "reopen it first" in refused.content.decode()
    assert live.count("/oauth2/token") == tokens_before  # no DNA page while recording runs
    assert Payment.objects.get(pk=payment.pk).state == S.AWAITING_CUSTOMER_ACTION

    reopened = client.post(f"/payments/{payment.id}/virtual-terminal/reopen/")

    assert reopened["Location"] == f"/payments/{payment.id}/virtual-terminal/"
    page = _page(client, payment)
    assert "Call recording is paused" in page and _frame_src(page)
    mutes = _telephony("call_recording.mute").order_by("created_at")
    assert [m.payload["session"] for m in mutes] == [1, 2]
    assert _session_steps(payment) == ["opened", "closed", "opened"]
    reopening = AuditEvent.objects.filter(
        payment_id=payment.id, event_type=EventType.VIRTUAL_TERMINAL_SESSION
    ).last()
    assert reopening.payload["reason"] == "reopened" and reopening.actor_id == str(vt_operator.pk)
    assert client.post(f"/payments/{payment.id}/virtual-terminal/reopen/").status_code == 302
    assert _telephony("call_recording.mute").count() == 2  # already open: no third mute

    card = client.get(_frame_src(page))
    pay_on_hosted_page(http, card["Location"])

    assert Payment.objects.get(pk=payment.pk).state == S.CAPTURED
    unmutes = _telephony("call_recording.unmute").order_by("created_at")
    assert [(m.payload["session"], m.payload["reason"]) for m in unmutes] == [
        (1, "cancelled"),
        (2, "completed"),
    ]


def test_leaving_the_page_closes_card_entry_through_a_csrf_checked_beacon(
    dna, telephony, site, patient, vt_operator
):
    session = _open(Actor.staff(vt_operator), telephony, site, patient)
    payment = session.payment
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(vt_operator)
    page = _page(browser, payment)
    close_url = f"/payments/{payment.id}/virtual-terminal/close/"
    assert 'id="vt-close"' in page and "sendBeacon" in page and '"pagehide"' in page

    forged = browser.post(close_url, {"beacon": "1"})
    assert forged.status_code == 403
    assert not _telephony("call_recording.unmute").exists()

    beacon = browser.post(close_url, {"beacon": "1", "csrfmiddlewaretoken": forms(page).csrf})

    assert beacon.status_code == 204
    [unmute] = _telephony("call_recording.unmute")
    assert unmute.payload["reason"] == "abandoned"
    assert "Call recording is paused" not in _page(browser, payment)
    assert Payment.objects.get(pk=payment.pk).state == S.AWAITING_CUSTOMER_ACTION


def test_the_janitor_closes_a_session_left_open_too_long(
    dna, settings, telephony, site, patient, vt_operator
):
    settings.DNA_VIRTUAL_TERMINAL_ABANDON_SECONDS = 900
    session = _open(Actor.staff(vt_operator), telephony, site, patient)
    started = AuditEvent.objects.filter(payment_id=session.payment.id).order_by("seq").last()

    early = janitor.run(now=started.occurred_at + timedelta(minutes=14))
    late = janitor.run(now=started.occurred_at + timedelta(minutes=15))

    assert (early.sessions_closed, late.sessions_closed) == (0, 1)
    [unmute] = _telephony("call_recording.unmute")
    assert unmute.payload["reason"] == "abandoned"
    closing = AuditEvent.objects.filter(
        payment_id=session.payment.id, event_type=EventType.VIRTUAL_TERMINAL_SESSION
    ).last()
    assert closing.actor_kind == "system" and closing.payload["action"] == "closed"
    assert Payment.objects.get(pk=session.payment.pk).state == S.AWAITING_CUSTOMER_ACTION
    assert janitor.run(now=started.occurred_at + timedelta(minutes=30)).sessions_closed == 0


def test_the_moto_fields_dna_asks_for_are_one_setting_away_and_only_on_phone_payments(
    live, settings, practice, site, patient, vt_operator
):
    from tests.providers.test_online import _checkout

    settings.DNA_MOTO_PAYMENT_DATA = {
        "transactionType": "MOTO",
        "paymentSettings": {"terminalId": "MOTO-TERMINAL-1"},
    }

    phone = _open(Actor.staff(vt_operator), practice, site, patient).payment_data
    online = _checkout(Actor.for_patient(patient), practice, site, patient).payment_data

    assert phone["transactionType"] == "MOTO"
    assert phone["paymentSettings"]["terminalId"] == "MOTO-TERMINAL-1"
    assert phone["paymentSettings"]["callbackUrl"] == online["paymentSettings"]["callbackUrl"]
    assert json.loads(phone["merchantCustomData"])["channel"] == "moto"
    assert online["transactionType"] == settings.DNA_ONLINE_TRANSACTION_TYPE
    assert online["paymentSettings"]["terminalId"] == practice.dna_terminal_id
    assert "channel" not in json.loads(online["merchantCustomData"])
