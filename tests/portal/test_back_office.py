"""Back-office pages: subscription status by patient and module; reconciliation exceptions."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.actors import Actor
from integrations.dna.settlement import BatchData, LineData, reconcile_settlements
from integrations.models import WebhookEvent
from practices.roles import Role
from tests.factories import PatientFactory, PracticeFactory, make_staff
from tests.payments.helpers import captured
from tests.providers.conftest import json_body, terminal_headers
from tests.subscriptions.conftest import deliver, gc_api, publish, scenario  # noqa: F401

pytestmark = pytest.mark.django_db

TERMINAL_WEBHOOK = "/webhooks/dna/terminal/"


def _rows(page: str) -> list[str]:
    """The body rows of the page's tables, as text with tags removed."""
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]


# --- subscriptions ---------------------------------------------------------------------------


@pytest.fixture
def landscape(deliver, gc_api, practice, patient):  # noqa: F811
    """Care Plan paid and Hygiene failed for our patient, a cancelled Hygiene mandate for
    another, and a paid Care Plan at another practice."""
    other = PatientFactory(practice=practice, display_name="Zed Other")
    elsewhere = PracticeFactory()
    stranger = PatientFactory(practice=elsewhere, display_name="Stranger Danger")
    sent = [
        scenario("payment_confirmed", practice, patient, module="care_plan", mandate_ref="CP-A"),
        scenario("payment_failed", practice, patient, module="hygiene", mandate_ref="HY-A"),
        scenario("mandate_cancelled", practice, other, module="hygiene", mandate_ref="HY-B"),
        scenario("payment_confirmed", elsewhere, stranger, module="care_plan", mandate_ref="CP-X"),
    ]
    for built in sent:
        publish(gc_api, built)
    deliver([event for built in sent for event in built.events])
    return {"other": other, "stranger": stranger}


def test_subscriptions_by_patient_and_by_module(client, landscape, patient, reception):
    client.force_login(reception)

    page = client.get("/subscriptions/").content.decode()

    rows = _rows(page)
    assert "Care Plan Subscriptions 0 0 1 0 0 1" in rows  # active, pending, paid, failed, cancelled
    assert "Hygiene Subscriptions 0 0 0 1 1 2" in rows
    by_patient = [r for r in rows if "CP-" in r or "HY-" in r]
    assert [r.split(" Subscriptions ")[0] for r in by_patient] == [
        f"{patient.display_name} Care Plan",
        f"{patient.display_name} Hygiene",
        "Zed Other Hygiene",
    ]
    assert "Failed HY-A" in by_patient[1] and "ARUDD-0" in by_patient[1]
    assert "Failed: 1 subscription." in page
    assert "Stranger Danger" not in page and "CP-X" not in page
    assert 'aria-current="page">Subscriptions<' in page


def test_subscriptions_filter_by_module_state_and_patient(client, landscape, patient, reception):
    client.force_login(reception)

    hygiene = client.get("/subscriptions/?module=hygiene").content.decode()
    failed = client.get("/subscriptions/?state=failed").content.decode()
    mine = client.get(f"/subscriptions/?patient={patient.id}").content.decode()

    assert "HY-A" in hygiene and "HY-B" in hygiene and "CP-A" not in hygiene
    assert "HY-A" in failed and "HY-B" not in failed and "CP-A" not in failed
    assert "Show only failed subscriptions" not in failed
    assert "CP-A" in mine and "HY-A" in mine and "HY-B" not in mine
    options = re.findall(r'<option value="([0-9a-f-]{36})"', mine)
    assert sorted(options) == sorted([str(patient.id), str(landscape["other"].id)])


def test_subscriptions_page_offers_no_collection_action(client, landscape, reception):
    client.force_login(reception)

    page = client.get("/subscriptions/").content.decode()

    posts = re.findall(r'<form method="post" action="([^"]+)"', page)
    buttons = re.findall(r"<button[^>]*>([^<]+)</button>", page)
    assert posts == ["/accounts/logout/"]
    assert buttons == [f"Sign out {reception.username}", "Apply filters"]


def test_subscriptions_page_needs_sign_in_and_only_reads(client, reception):
    response = client.get("/subscriptions/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(reception)
    assert client.post("/subscriptions/").status_code == 405


# --- reconciliation exceptions ---------------------------------------------------------------


class SettlementWithExceptions:
    """A settlement source: one amount mismatch on our payment, one line nobody owns."""

    def __init__(self, payment):
        self.payment = payment

    def fetch_batches(self):
        wrong = LineData(
            transaction_id=self.payment.provider_reference,
            parent_id="",
            invoice_id=str(self.payment.id),
            kind="sale",
            amount=self.payment.captured_amount - Decimal("1.00"),
            fee=Decimal("0.50"),
            currency="GBP",
        )
        unknown = LineData(
            transaction_id="txn-nobody",
            parent_id="",
            invoice_id="INV-NOT-OURS",
            kind="sale",
            amount=Decimal("9.99"),
            fee=Decimal("0.20"),
            currency="GBP",
        )
        lines = [wrong, unknown]
        return [
            BatchData(
                reference="batch-portal-1",
                settled_at=None,
                currency="GBP",
                lines=lines,
                sales=sum(line.amount for line in lines),
                refunds=Decimal(0),
                fees=sum(line.fee for line in lines),
                net=sum(line.amount - line.fee for line in lines),
            )
        ]


def unmatched_terminal_body(terminal) -> dict:
    """DNA's terminal webhook approving a payment we never made."""
    unknown = uuid.uuid4()
    return {
        "uti": str(unknown),
        "tid": terminal.tid,
        "status": "approved",
        "transactionId": str(uuid.uuid4()),
        "amount": Decimal("85"),
        "currency": "GBP",
        "reference": unknown.hex,
        "authCode": "ABCDEF",
        "rrn": "123456789012",
        "errorCode": 0,
        "message": "Approved",
        "paymentMethod": "card",
        "cardSchemeName": "VISA",
        "timestamp": "2026-11-23T10:00:00.000Z",
    }


@pytest.fixture
def exceptions(
    dna, client, django_capture_on_commit_callbacks, practice, site, patient, sim_terminal
):
    """A settlement amount mismatch, an unattributable line, and a terminal event for no payment."""
    staff = Actor.staff(make_staff(Role.RECEPTION, practice=practice))
    payment = captured(
        staff, Actor.provider("dna"), practice, site, patient, terminal=sim_terminal, amount="45.00"
    )
    stats = reconcile_settlements(source=SettlementWithExceptions(payment))
    assert stats.exceptions == 2
    body = json_body(unmatched_terminal_body(sim_terminal))
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            TERMINAL_WEBHOOK, data=body, content_type="application/json", **terminal_headers(body)
        )
    assert answer.status_code == 200
    event = WebhookEvent.objects.get(provider="dna_terminal")
    assert event.status == WebhookEvent.Status.UNMATCHED
    return {"payment": payment, "event": event}


def test_finance_staff_see_settlement_exceptions_and_unmatched_events(client, exceptions, practice):
    finance = make_staff(Role.FINANCE_ADMIN, practice=practice)
    client.force_login(finance)

    page = client.get("/exceptions/").content.decode()

    payment = exceptions["payment"]
    assert "Settlement items that did not match (1)" in page
    assert "Amount mismatch" in page and "Settled 44.00, captured 45.00." in page
    assert f'href="/payments/{payment.id}/"' in page
    assert "INV-NOT-OURS" not in page  # no practice could be found for it: superusers only
    assert "Provider events with no matching payment (1)" in page
    assert exceptions["event"].resource_ref in page
    assert 'href="/exceptions/" aria-current="page">Exceptions<' in page
    since = (timezone.now() - timedelta(days=30)).date().isoformat()
    assert f'href="/payments/?exception=pending_pms_writeback&amp;date_from={since}"' in page


def test_superusers_also_see_what_no_practice_owns(client, exceptions, practice):
    superuser = make_staff(Role.FINANCE_ADMIN, practice=practice, is_superuser=True, is_staff=True)
    client.force_login(superuser)

    page = client.get("/exceptions/").content.decode()

    assert "Settlement items that did not match (2)" in page and "INV-NOT-OURS" in page


def test_other_practices_finance_staff_see_none_of_it(client, exceptions):
    outsider = make_staff(Role.FINANCE_ADMIN, practice=PracticeFactory())
    client.force_login(outsider)

    page = client.get("/exceptions/").content.decode()

    assert "Settlement items that did not match (0)" in page
    assert "Provider events with no matching payment (0)" in page
    assert str(exceptions["payment"].id) not in page
    assert exceptions["event"].resource_ref not in page


def test_exceptions_are_for_finance_staff_only(client, reception, refund_manager):
    for user in (reception, refund_manager):
        client.force_login(user)

        assert client.get("/exceptions/").status_code == 403
        assert 'href="/exceptions/"' not in client.get("/").content.decode()
