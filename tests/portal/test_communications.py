"""The communications log: every message we asked Communication Hub to send (§6.2, §8).

Messages are made by the real services (capture, pay-by-link, receipt resend,
the overdue sweep) and delivered by the real relay to the module sink, so each
delivery status on the page is one the relay really recorded.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.actors import Actor
from integrations.catalog import OUTBOUND_EVENTS
from integrations.models import Destination, OutboxMessage
from integrations.relay import relay_due
from payments import communications, flows, overdue, receipts, services
from payments.models import PaymentMethod, TargetType
from practices.roles import Role
from tests.factories import (
    PatientFactory,
    PracticeFactory,
    SiteFactory,
    UserFactory,
    make_staff,
)
from tests.integrations.conftest import (  # noqa: F401
    endpoint_settings,
    enqueue,
    pms_sim,
    relay_settings,
    sink,
)
from tests.payments.helpers import captured, new_payment

pytestmark = pytest.mark.django_db

URL = "/communications/"
Status = OutboxMessage.Status


def _rows(page: str) -> list[str]:
    """The log's body rows as text, tags removed."""
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    text = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]
    return [re.sub(r" ([,;])", r"\1", row) for row in text]


def _payments(page: str) -> list[str]:
    """The payment each row links to, in page order."""
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S).group(1)
    return re.findall(r'href="/payments/([0-9a-f-]{36})/"', body)


def _cash(actor, practice, site, patient, *, amount="20.00", target_id="INV-CASH"):
    """A cash payment taken at the desk: captured at once, so its receipt is asked for."""
    payment = new_payment(
        actor,
        practice,
        site,
        patient,
        method=PaymentMethod.CASH,
        amount=amount,
        target_id=target_id,
    )
    services.tender_record_received(payment_id=payment.id, actor=actor)
    return payment


def _link(actor, practice, site, patient, **extra):
    return flows.pay_by_link_issue(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=extra.pop("target_id", "INV-LINK"),
        amount=extra.pop("amount", "45.50"),
        **extra,
    )


def test_every_communication_hub_message_type_has_a_name_staff_read():
    sent = {e.event_type for e in OUTBOUND_EVENTS if e.destination == Destination.COMMUNICATION_HUB}

    assert set(communications.EVENT_LABELS) == sent


def test_each_message_says_what_it_is_for_whom_and_where_its_delivery_stands(
    client,
    relay_settings,  # noqa: F811
    sink,  # noqa: F811
    practice,
    site,
    patient,
    terminal,
    reception,
    reception_actor,
    provider_actor,
):
    paid = captured(
        reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="80.00"
    )
    relay_due()  # the receipt: delivered
    sink.mode = "reject"
    due = timezone.now() + timedelta(hours=1)
    issued = _link(reception_actor, practice, site, patient, channel="sms", due_at=due)
    relay_due()  # the link: refused at once, dead
    endpoints = endpoint_settings(sink.url, None)
    relay_settings.OUTBOX_ENDPOINTS = {
        **endpoints,
        Destination.COMMUNICATION_HUB: {"url": "", "secret": ""},
    }
    receipts.receipt_resend(payment_id=paid.id, actor=reception_actor)
    relay_due()  # the receipt sent again: Communication Hub not configured, disabled
    relay_settings.OUTBOX_ENDPOINTS = endpoints
    sink.mode = "down"
    overdue.overdue_process(now=due + timedelta(days=3, hours=1))
    relay_due()  # the first reminder: 503, waiting to be tried again
    client.force_login(reception)

    page = client.get(URL).content.decode()

    rows = _rows(page)
    name = patient.display_name
    assert len(rows) == 4
    reminder, resent, link, receipt = rows
    sent_at = OutboxMessage.objects.get(event_type="payment_reminder.requested").created_at
    assert reminder.startswith(f"{sent_at:%-d %b %Y %H:%M} Overdue reminder 1 of 3")
    assert f"Overdue reminder 1 of 3 {name} INV-LINK · £45.50" in reminder
    assert "App, then Email, then SMS Queued for Communication Hub" in reminder
    assert "Communication Hub did not take it yet (1 attempt failed); the next try is at" in (
        reminder
    )
    assert reminder.endswith(" 1")
    assert f"Payment receipt (sent again) {name} INV-100 · £80.00" in resent
    assert "Not sent: Communication Hub is not configured" in resent
    assert "Communication Hub is not connected here, so it was kept and not sent." in resent
    assert resent.endswith(" 0")
    assert f"Payment link {name} INV-LINK · £45.50 SMS, then App, then Email" in link
    assert "Not delivered to Communication Hub" in link
    assert "refused it or could not be reached (1 attempt), so the patient was not sent it" in link
    assert link.endswith(" 1")
    assert f"Payment receipt {name} INV-100 · £80.00 App, then Email, then SMS" in receipt
    delivered_at = OutboxMessage.objects.get(
        payment_id=paid.id, event_type="receipt.requested", status=Status.DELIVERED
    ).delivered_at
    assert f"Communication Hub took it at {delivered_at:%-d %b %Y %H:%M} UTC" in receipt
    assert "it does not tell us which channel reached them" in receipt
    assert receipt.endswith(" 1")
    assert _payments(page) == [
        str(issued.link.payment_id),
        str(paid.id),
        str(issued.link.payment_id),
        str(paid.id),
    ]
    # The link's URL carries its token, the patient's credential: never on the page.
    assert issued.token not in page and issued.url not in page and "/pay/" not in page
    assert 'aria-current="page">Communications<' in page


def test_staff_see_their_own_practices_and_sites_only(
    client, practice, site, other_site, patient, reception_actor
):
    here = _cash(reception_actor, practice, site, patient, target_id="INV-HERE")
    upstairs = _cash(reception_actor, practice, other_site, patient, target_id="INV-UP")
    sister = PracticeFactory(group=practice.group)
    sister_staff = make_staff(Role.RECEPTION, practice=sister)
    at_sister = _cash(
        Actor.staff(sister_staff),
        sister,
        SiteFactory(practice=sister),
        PatientFactory(practice=sister),
    )
    elsewhere = PracticeFactory()
    their_staff = make_staff(Role.RECEPTION, practice=elsewhere)
    theirs = _cash(
        Actor.staff(their_staff),
        elsewhere,
        SiteFactory(practice=elsewhere),
        PatientFactory(practice=elsewhere),
    )
    front_desk = make_staff(Role.RECEPTION, practice=practice, sites=[site])
    manager = make_staff(Role.FINANCE_ADMIN, practice=practice)
    group = make_staff(Role.GROUP_OPERATOR, group=practice.group)

    # A message about no payment has no site: everyone at its practice sees it.
    enqueue(Destination.COMMUNICATION_HUB, "payment_reminder.requested", practice, {})

    def seen(who):
        client.force_login(who)
        page = client.get(URL).content.decode()
        return set(_payments(page)), len(_rows(page))

    assert seen(front_desk) == ({str(here.id)}, 2)
    assert seen(manager) == ({str(here.id), str(upstairs.id)}, 3)
    assert seen(sister_staff) == ({str(at_sister.id)}, 1)
    assert seen(their_staff) == ({str(theirs.id)}, 1)
    assert seen(group) == ({str(here.id), str(upstairs.id), str(at_sister.id)}, 4)


def test_filters_by_message_delivery_and_date(
    client,
    relay_settings,  # noqa: F811
    sink,  # noqa: F811
    practice,
    site,
    patient,
    reception,
    reception_actor,
):
    paid = _cash(reception_actor, practice, site, patient)
    relay_due()  # the receipt: delivered
    issued = _link(reception_actor, practice, site, patient)  # its message: still queued
    link_payment = str(issued.link.payment_id)
    client.force_login(reception)
    today = timezone.now().date().isoformat()
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()

    def shown(query):
        return _payments(client.get(f"{URL}?{query}").content.decode())

    assert shown("") == [link_payment, str(paid.id)]
    assert shown("type=receipt.requested") == [str(paid.id)]
    assert shown("type=payment_link.deliver") == [link_payment]
    assert shown("type=payment_reminder.requested") == []
    assert shown("status=pending") == [link_payment]
    assert shown("status=delivered") == [str(paid.id)]
    assert shown("status=dead") == []
    assert shown(f"date_from={today}&date_to={today}") == [link_payment, str(paid.id)]
    assert shown(f"date_from={tomorrow}") == []
    backwards = client.get(f"{URL}?date_from={tomorrow}&date_to={today}")
    assert backwards.status_code == 200
    assert "The end date must be on or after the start date." in backwards.content.decode()
    assert "Select a valid choice." in client.get(f"{URL}?type=task.create").content.decode()


def test_pages_cover_every_message_once_at_the_same_query_cost(
    client, practice, site, patient, reception, reception_actor
):
    made = [_cash(reception_actor, practice, site, patient, target_id=f"INV-{n}") for n in range(3)]
    client.force_login(reception)
    client.get(URL)  # warm the session

    with CaptureQueriesContext(connection) as few:
        client.get(URL)
    made += [
        _cash(reception_actor, practice, site, patient, target_id=f"INV-{n}") for n in range(3, 55)
    ]
    with CaptureQueriesContext(connection) as full:
        first = client.get(f"{URL}?status=pending").content.decode()
    cursor = re.search(r"after=([^\"&]+)", first).group(1)
    with CaptureQueriesContext(connection) as last:
        second = client.get(f"{URL}?status=pending&after={cursor}").content.decode()

    assert len(few) == len(full) == len(last)
    assert len(_payments(first)) == 50 and len(_payments(second)) == 5
    assert _payments(first) + _payments(second) == [str(p.id) for p in reversed(made)]
    assert "Next page" not in second and "First page" in second
    assert 'href="?status=pending"' in second  # the filter is kept
    stale = client.get(f"{URL}?after=not-a-cursor").content.decode()
    assert "That page link is out of date." in stale
    assert _payments(stale) == _payments(first)


def test_the_log_is_read_only_and_needs_a_payments_role(client, reception):
    client.force_login(reception)
    assert client.post(URL).status_code == 405
    client.force_login(UserFactory())
    assert client.get(URL).status_code == 403
