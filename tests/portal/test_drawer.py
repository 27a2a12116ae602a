"""The Payment Drawer end to end: amount and method choices, terminal to captured, splits, links, phone."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from integrations.models import Destination, OutboxMessage
from payments.models import Payment, PaymentLink, PaymentMethod, PaymentState, SplitPayment
from practices.roles import Role
from tests.factories import make_staff

S = PaymentState
TID = "TIDPROV01"


def _drawer_url(patient, **query):
    params = "&".join(
        f"{k}={v}"
        for k, v in {
            "target_type": "invoice",
            "target_id": "INV-42",
            "total": "120.00",
            **query,
        }.items()
    )
    return f"/patients/{patient.id}/pay/?{params}"


def _post(client, patient, **fields):
    data = {
        "site": str(fields.pop("site")),
        "target_type": "invoice",
        "target_id": "INV-42",
        "invoice_total": "120.00",
        "amount_choice": "total",
        "channel": "app",
        **fields,
    }
    return client.post(_drawer_url(patient), data)


def test_drawer_offers_amounts_and_only_the_methods_the_role_allows(
    client, practice, site, patient, terminal, reception
):
    client.force_login(reception)
    page = client.get(_drawer_url(patient)).content.decode()
    assert "invoice total £120.00" in page
    assert 'value="terminal"' in page and 'value="cash"' in page and 'value="pay_by_link"' in page
    assert 'value="virtual_terminal"' not in page
    assert terminal.label in page
    operator = make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=practice)
    client.force_login(operator)
    assert 'value="virtual_terminal"' in client.get(_drawer_url(patient)).content.decode()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "cash", "amount_choice": "custom"}, "Enter the amount to take."),
        (
            {"method": "cash", "amount_choice": "partial", "amount": "120.00"},
            "A part payment must be less than the total of £120.00.",
        ),
        ({"method": "terminal"}, "Choose the terminal the patient will use."),
        (
            {"method": "cash", "invoice_total": "", "amount_choice": "total"},
            "There is no invoice total here: enter an amount.",
        ),
    ],
)
def test_drawer_explains_what_is_wrong_and_takes_nothing(
    client, site, patient, reception, fields, message
):
    client.force_login(reception)
    response = _post(client, patient, site=site.id, **fields)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Payment.objects.exists()


def test_cash_is_captured_at_once(client, site, patient, reception):
    client.force_login(reception)
    response = _post(
        client, patient, site=site.id, method="cash", amount_choice="partial", amount="20.00"
    )
    payment = Payment.objects.get()
    assert response["Location"] == f"/payments/{payment.id}/"
    assert (payment.method, payment.state, payment.amount) == ("cash", S.CAPTURED, Decimal("20.00"))


def test_terminal_payment_from_the_drawer_to_captured(
    client, live, site, patient, sim_terminal, reception
):
    client.force_login(reception)
    response = _post(
        client, patient, site=site.id, method="terminal", terminal=str(sim_terminal.id)
    )
    payment = Payment.objects.get()
    assert response["Location"] == f"/payments/{payment.id}/"
    waiting = client.get(f"/payments/{payment.id}/status/").content.decode()
    assert "waiting for the patient" in waiting and 'hx-trigger="every 500ms"' in waiting
    live.terminal(TID, "approve")
    done = client.get(f"/payments/{payment.id}/status/").content.decode()
    assert "Captured" in done and "every 500ms" not in done


def test_declined_terminal_payment_shows_the_reason_and_a_retry(
    client, live, site, patient, sim_terminal, reception
):
    client.force_login(reception)
    _post(client, patient, site=site.id, method="terminal", terminal=str(sim_terminal.id))
    payment = Payment.objects.get()
    live.terminal(TID, "decline")
    panel = client.get(f"/payments/{payment.id}/status/").content.decode()
    assert "Failed" in panel and "Retry payment" in panel
    client.post(f"/payments/{payment.id}/retry/")
    retry = Payment.objects.get(retry_of=payment)
    assert retry.state == S.AWAITING_CUSTOMER_ACTION  # sent to the terminal again
    live.terminal(TID, "approve")
    retry.refresh_from_db()
    assert retry.state == S.CAPTURED


def test_pay_by_link_from_the_drawer(client, site, patient, reception):
    client.force_login(reception)
    response = _post(client, patient, site=site.id, method="pay_by_link", channel="sms")
    link = PaymentLink.objects.get()
    assert response["Location"] == f"/payments/{link.payment_id}/"
    assert link.channel == "sms" and link.payment.method == PaymentMethod.PAY_BY_LINK
    delivery = OutboxMessage.objects.get(
        destination=Destination.COMMUNICATION_HUB, event_type="payment_link.deliver"
    )
    assert delivery.payload["channels"][0] == "sms"


def test_a_link_given_a_due_date_becomes_an_overdue_balance_when_unpaid(
    client, site, patient, reception
):
    from datetime import UTC, datetime, timedelta

    from payments.models import OverdueBalance
    from payments.overdue import overdue_process

    client.force_login(reception)
    today = datetime.now(UTC).date()
    due_day = today + timedelta(days=5)
    past = _post(
        client, patient, site=site.id, method="pay_by_link", due_at=str(today - timedelta(1))
    )
    on_a_terminal = _post(client, patient, site=site.id, method="cash", due_at=str(due_day))
    assert (
        past.status_code == 400 and "The due date must be in the future." in past.content.decode()
    )
    assert on_a_terminal.status_code == 400
    assert "Only a payment link is given a due date." in on_a_terminal.content.decode()
    assert not Payment.objects.exists()

    response = _post(client, patient, site=site.id, method="pay_by_link", due_at=str(due_day))

    link = PaymentLink.objects.get()
    due_at = datetime.combine(due_day, datetime.max.time().replace(microsecond=0), tzinfo=UTC)
    assert response.status_code == 302 and link.payment.due_at == due_at
    # Payable until the last reminder (3, 7, 14 days after the due date), not the usual 24 h.
    assert link.expires_at >= due_at + timedelta(days=14) - timedelta(hours=1)
    assert "Due by" in client.get(response["Location"]).content.decode()
    assert overdue_process(now=due_at - timedelta(hours=1)).opened == 0
    stats = overdue_process(now=due_at + timedelta(days=3, hours=1))
    balance = OverdueBalance.objects.get()
    assert (stats.opened, stats.reminded) == (1, 1)
    assert (balance.payment_id, balance.target_id, balance.due_at) == (
        link.payment_id,
        "INV-42",
        due_at,
    )
    reminder = OutboxMessage.objects.get(event_type="payment_reminder.requested")
    assert reminder.payload["payment_id"] == str(link.payment_id)


def test_split_from_the_drawer_settles_when_every_tender_is_captured(
    client, live, site, patient, sim_terminal, reception
):
    client.force_login(reception)
    base = {
        "site": str(site.id),
        "target_type": "invoice",
        "target_id": "INV-42",
        "amount_due": "100.00",
    }
    short = client.post(
        f"/patients/{patient.id}/split/",
        {
            **base,
            "method_1": "cash",
            "amount_1": "30.00",
            "method_2": "voucher",
            "amount_2": "20.00",
        },
    )
    assert short.status_code == 400 and "short of 100.00" in short.content.decode()
    over = client.post(
        f"/patients/{patient.id}/split/",
        {
            **base,
            "method_1": "cash",
            "amount_1": "80.00",
            "method_2": "voucher",
            "amount_2": "30.00",
        },
    )
    assert over.status_code == 400 and "more than 100.00" in over.content.decode()
    assert not SplitPayment.objects.exists()

    created = client.post(
        f"/patients/{patient.id}/split/",
        {
            **base,
            "method_1": "terminal",
            "amount_1": "60.00",
            "terminal_1": str(sim_terminal.id),
            "method_2": "cash",
            "amount_2": "25.00",
            "method_3": "voucher",
            "amount_3": "15.00",
        },
    )
    split = SplitPayment.objects.get()
    assert created["Location"] == f"/splits/{split.id}/"
    tenders = {t.method: t for t in Payment.objects.filter(split=split)}
    url = f"/splits/{split.id}/"
    assert "Remaining to collect: £100.00" in client.get(url).content.decode()
    client.post(f"{url}tenders/{tenders['cash'].id}/", {"action": "received"})
    client.post(f"{url}tenders/{tenders['voucher'].id}/", {"action": "received"})
    assert "Remaining to collect: £60.00" in client.get(url).content.decode()
    poll = f"{url}?part=text&shown="
    page = client.get(url).content.decode()
    shown = re.search(r"shown=([0-9a-f]{16})", page).group(1)
    assert client.get(poll + shown).status_code == 204  # nothing changed: nothing to swap
    answer = client.post(
        f"{url}tenders/{tenders['terminal'].id}/", {"action": "send"}, HTTP_HX_REQUEST="true"
    )
    assert answer.status_code == 200 and answer["HX-Trigger"] == "split-action"
    assert answer.content.decode().strip() == ""  # no error
    changed = client.get(poll + shown)
    assert changed.status_code == 200 and changed["HX-Trigger"] == "split-changed"
    assert "Card terminal on Reception 1: awaiting customer action." in changed.content.decode()
    table = client.get(f"{url}?part=table").content.decode()
    assert f'id="tender-{tenders["terminal"].id}-send"' not in table
    again = client.post(
        f"{url}tenders/{tenders['terminal'].id}/", {"action": "received"}, HTTP_HX_REQUEST="true"
    )
    assert 'role="alert">That action is not available for this tender.' in again.content.decode()
    live.terminal(TID, "approve")
    page = client.get(url).content.decode()
    assert "Settled" in page and "All tenders captured." in page
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.SETTLED


def test_virtual_terminal_shows_hosted_fields_and_the_recording_indicator(
    client, live, practice, site, patient
):
    practice.telephony_enabled = True
    practice.save()
    operator = make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=practice)
    client.force_login(operator)
    response = _post(client, patient, site=site.id, method="virtual_terminal")
    payment = Payment.objects.get()
    assert response["Location"] == f"/payments/{payment.id}/virtual-terminal/"
    page = client.get(response["Location"]).content.decode()
    assert "Call recording is paused" in page
    frame = re.search(
        r'<iframe title="Secure card entry provided by DNA Payments" src="([^"]+)"', page
    )
    assert frame and frame.group(1) == f"/payments/{payment.id}/virtual-terminal/card/"
    card = client.get(frame.group(1))
    assert card.status_code == 302 and card["Location"].startswith(live.url)  # DNA's page
    assert card["X-Frame-Options"] == "SAMEORIGIN"
    assert not re.search(r"<input[^>]*name=\"(card|pan|cvv)", page, re.I)
    mute = OutboxMessage.objects.filter(destination=Destination.TELEPHONY)
    assert [m.event_type for m in mute] == ["call_recording.mute"]
    client.post(f"/payments/{payment.id}/virtual-terminal/close/")
    assert sorted(m.event_type for m in mute.all()) == [
        "call_recording.mute",
        "call_recording.unmute",
    ]
