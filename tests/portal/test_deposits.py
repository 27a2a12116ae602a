"""The Deposits page: scoped list with a status filter, and the waive / refund / override actions."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import deposits, services
from payments.models import Deposit, DepositStatus, PaymentState, Refund
from practices.roles import Role
from tests.factories import PatientFactory, PracticeFactory, SiteFactory, make_staff

pytestmark = pytest.mark.django_db

D = DepositStatus
AM = Actor.system("appointment_manager")


def _rows(page: str) -> list[str]:
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]


def _deposit(practice, site, patient, appointment_id, amount="50.00") -> Deposit:
    return deposits.deposit_request(
        actor=AM,
        practice=practice,
        site=site,
        patient=patient,
        appointment_id=appointment_id,
        amount=amount,
    )


def _paid(deposit: Deposit, provider_actor) -> Deposit:
    services.payment_capture(payment_id=deposit.payment_id, actor=provider_actor)
    deposit.refresh_from_db()
    assert deposit.status == D.PAID
    return deposit


@pytest.fixture
def finance(practice):
    return make_staff(Role.FINANCE_ADMIN, practice=practice)


@pytest.fixture
def elsewhere():
    practice = PracticeFactory()
    site = SiteFactory(practice=practice)
    return _deposit(practice, site, PatientFactory(practice=practice), "APT-ELSEWHERE")


def test_the_list_shows_this_practices_deposits_with_badges_and_filters_by_status(
    client, practice, site, patient, reception, provider_actor, elsewhere
):
    _deposit(practice, site, patient, "APT-1")
    _paid(_deposit(practice, site, patient, "APT-2", amount="75.00"), provider_actor)
    client.force_login(reception)

    page = client.get("/deposits/").content.decode()
    paid_only = client.get("/deposits/", {"status": "paid"}).content.decode()

    rows = _rows(page)
    assert any("APT-1" in r and "£50.00" in r and "Requested" in r for r in rows)
    assert any("APT-2" in r and "£75.00" in r and "Paid" in r for r in rows)
    assert "APT-ELSEWHERE" not in page
    assert '<span class="badge paid">Paid</span>' in page
    assert '<span class="badge pending">Requested</span>' in page
    assert "APT-2" in paid_only and "APT-1" not in paid_only
    assert 'href="/deposits/"' in page and 'aria-current="page">Deposits' in page


def test_another_practices_deposit_is_not_found(client, reception, elsewhere):
    client.force_login(reception)

    assert client.get(f"/deposits/{elsewhere.id}/").status_code == 404


def test_finance_waives_a_requested_deposit_with_a_reason(client, practice, site, patient, finance):
    deposit = _deposit(practice, site, patient, "APT-1")
    client.force_login(finance)
    url = f"/deposits/{deposit.id}/"

    no_reason = client.post(url, {"action": "waive", "reason": ""})
    deposit.refresh_from_db()
    assert no_reason.status_code == 400 and "Give a reason." in no_reason.content.decode()
    assert deposit.status == D.REQUESTED

    done = client.post(
        url, {"action": "waive", "reason": "Clinician waived: long-standing patient"}
    )

    assert done.status_code == 302 and done["Location"] == url
    deposit.refresh_from_db()
    assert (deposit.status, deposit.status_reason) == (
        D.WAIVED,
        "Clinician waived: long-standing patient",
    )
    assert deposit.payment.state == PaymentState.VOIDED
    page = client.get(url).content.decode()
    assert "Deposit waived" in page and "Clinician waived" in page


def test_reception_sees_deposits_but_has_no_action(client, practice, site, patient, reception):
    deposit = _deposit(practice, site, patient, "APT-1")
    client.force_login(reception)
    url = f"/deposits/{deposit.id}/"

    page = client.get(url).content.decode()
    attempt = client.post(url, {"action": "waive", "reason": "Trying anyway"})

    assert "Handle an exception" not in page
    assert attempt.status_code == 400
    deposit.refresh_from_db()
    assert deposit.status == D.REQUESTED


def test_a_refund_manager_refunds_a_paid_deposit(
    client, practice, site, patient, refund_manager, provider_actor
):
    deposit = _paid(_deposit(practice, site, patient, "APT-1"), provider_actor)
    client.force_login(refund_manager)
    url = f"/deposits/{deposit.id}/"
    page = client.get(url).content.decode()
    assert 'value="refund"' in page and 'value="override"' not in page  # no manage_exceptions

    missing_code = client.post(url, {"action": "refund", "reason": "Appointment cancelled"})
    done = client.post(
        url,
        {"action": "refund", "reason": "Appointment cancelled", "reason_code": "patient_request"},
    )

    assert missing_code.status_code == 400
    assert done.status_code == 302
    refund = Refund.objects.get()
    assert (refund.payment_id, refund.amount, refund.reason_code) == (
        deposit.payment_id,
        Decimal("50.00"),
        "patient_request",
    )
    services.refund_complete(refund_id=refund.id, actor=provider_actor)
    deposit.refresh_from_db()
    assert deposit.status == D.REFUNDED


def test_finance_overrides_a_paid_deposit_to_forfeited(
    client, practice, site, patient, finance, provider_actor
):
    deposit = _paid(_deposit(practice, site, patient, "APT-1"), provider_actor)
    client.force_login(finance)
    url = f"/deposits/{deposit.id}/"

    no_status = client.post(url, {"action": "override", "reason": "Late cancellation"})
    done = client.post(
        url, {"action": "override", "status": "forfeited", "reason": "Late cancellation"}
    )

    assert no_status.status_code == 400
    assert done.status_code == 302
    deposit.refresh_from_db()
    assert deposit.status == D.FORFEITED
    override = AuditEvent.objects.get(event_type=EventType.OVERRIDE_APPLIED)
    assert (override.actor_id, override.payload["reason"]) == (str(finance.pk), "Late cancellation")
    signal = OutboxMessage.objects.get(
        destination=Destination.FINANCIAL_INSIGHTS, event_type="deposit.forfeited"
    )
    assert signal.payload["override"] is True
