"""Tablet endpoints: collect on a terminal or by link, read status; RBAC and tenant scope as the
portal has them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from audit.actors import Actor
from integrations.models import OutboxMessage
from payments import flows, services
from payments.models import Payment, PaymentState
from practices.roles import Role
from tests.factories import (
    PatientFactory,
    PracticeFactory,
    SiteFactory,
    TerminalFactory,
    make_staff,
)

S = PaymentState
COLLECT = "/api/v1/staff/collections/"


def _body(patient, site, **extra) -> dict:
    return {
        "patient_id": str(patient.id),
        "site_id": str(site.id),
        "target_type": "invoice",
        "target_id": "INV-500",
        "amount": "75.50",
        "method": "pay_by_link",
        **extra,
    }


@pytest.mark.django_db
def test_a_link_collection_sends_the_link_and_never_returns_it(staff_api, reception, patient, site):
    answer = staff_api(reception).post(COLLECT, _body(patient, site, channel="sms"), format="json")

    assert answer.status_code == 201, answer.content
    body = answer.json()
    payment = Payment.objects.get(pk=body["id"])
    assert body["state"] == "awaiting_customer_action" and body["method"] == "pay_by_link"
    assert body["amount"] == "75.50" and body["patient_id"] == str(patient.id)
    assert body["initiated_by"] == reception.get_full_name()
    assert body["link"]["status"] == "active" and body["link"]["channel"] == "sms"
    message = OutboxMessage.objects.get(event_type="payment_link.deliver")
    assert message.payload["channels"] == ["sms", "app", "email"]
    token = message.payload["url"].rstrip("/").rsplit("/", 1)[1]
    assert token not in answer.content.decode()
    assert "/pay/" not in answer.content.decode()
    assert payment.initiated_by_user_id == reception.pk


@pytest.mark.django_db
def test_a_link_collection_may_carry_a_due_date(staff_api, reception, patient, site, terminal):
    from datetime import timedelta

    from django.utils import timezone

    due = (timezone.now() + timedelta(days=10)).replace(microsecond=0)
    api = staff_api(reception)

    answer = api.post(COLLECT, _body(patient, site, due_at=due.isoformat()), format="json")
    past = api.post(
        COLLECT,
        _body(patient, site, target_id="INV-501", due_at=(due - timedelta(days=20)).isoformat()),
        format="json",
    )
    on_a_terminal = api.post(
        COLLECT,
        _body(
            patient,
            site,
            target_id="INV-502",
            method="terminal",
            terminal_id=str(terminal.id),
            due_at=due.isoformat(),
        ),
        format="json",
    )

    assert answer.status_code == 201, answer.content
    payment = Payment.objects.get(pk=answer.json()["id"])
    assert payment.due_at == due
    assert answer.json()["due_at"] == due.isoformat().replace("+00:00", "Z")
    assert (past.status_code, past.json()["code"], past.json()["field"]) == (
        400,
        "invalid_due_at",
        "due_at",
    )
    assert (on_a_terminal.status_code, on_a_terminal.json()["code"]) == (400, "invalid_due_at")
    assert Payment.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_terminal_collection_reaches_the_terminal_and_its_status_can_be_read(
    live, staff_api, reception, patient, site, sim_terminal
):
    client = staff_api(reception)

    answer = client.post(
        COLLECT,
        _body(patient, site, method="terminal", terminal_id=str(sim_terminal.id)),
        format="json",
    )

    assert answer.status_code == 201, answer.content
    payment_id = answer.json()["id"]
    status = client.get(f"/api/v1/staff/payments/{payment_id}/").json()
    assert status["terminal_id"] == str(sim_terminal.id)
    assert status["state"] == "awaiting_customer_action"
    [sale] = [r for r in live.requests("/axept/transaction") if r["method"] == "POST"]
    assert sale["body"]["uti"] == payment_id and Decimal(str(sale["body"]["amount"])) == Decimal(
        "75.50"
    )

    live.terminal("TIDPROV01", "approve")  # the patient taps their card on the terminal

    done = client.get(f"/api/v1/staff/payments/{payment_id}/").json()
    assert done["state"] == "captured" and done["state_label"] == "Captured"
    assert done["provider_reference"]


@pytest.mark.django_db
def test_a_terminal_is_required_for_terminal_collections_and_must_be_at_the_site(
    staff_api, reception, practice, patient, site, other_site
):
    elsewhere = TerminalFactory(site=other_site, practice=practice)
    client = staff_api(reception)

    missing = client.post(COLLECT, _body(patient, site, method="terminal"), format="json")
    wrong = client.post(
        COLLECT,
        _body(patient, site, method="terminal", terminal_id=str(elsewhere.id)),
        format="json",
    )

    assert missing.status_code == 400 and missing.json()["field"] == "terminal_id"
    assert missing.json()["code"] == "terminal_required"
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_terminal"
    assert not Payment.objects.exists()


@pytest.mark.django_db
def test_roles_without_take_payment_rights_are_refused_by_the_service(
    staff_api, approver, patient, site
):
    answer = staff_api(approver).post(COLLECT, _body(patient, site), format="json")

    assert answer.status_code == 403
    assert answer.json() == {
        "code": "permission_denied",
        "message": "You do not have permission to initiate payment.",
    }
    assert not Payment.objects.exists()


@pytest.mark.django_db
def test_other_practices_and_sites_outside_access_are_not_found(
    staff_api, practice, patient, site, other_site, reception_actor
):
    front_desk = make_staff(Role.RECEPTION, practice=practice, sites=[site])
    other_practice = PracticeFactory()
    their_site = SiteFactory(practice=other_practice)
    their_patient = PatientFactory(practice=other_practice)
    their_payment = flows.pay_by_link_issue(
        actor=Actor.system("appointment_manager"),
        practice=other_practice,
        site=their_site,
        patient=their_patient,
        target_type="invoice",
        target_id="INV-X",
        amount="10.00",
    ).link.payment
    other_site_payment = flows.pay_by_link_issue(
        actor=reception_actor,
        practice=practice,
        site=other_site,
        patient=patient,
        target_type="invoice",
        target_id="INV-Y",
        amount="10.00",
    ).link.payment
    client = staff_api(front_desk)

    answers = [
        client.post(COLLECT, _body(their_patient, their_site), format="json"),
        client.post(COLLECT, _body(patient, their_site), format="json"),
        client.post(COLLECT, _body(patient, other_site), format="json"),
        client.get(f"/api/v1/staff/payments/{their_payment.id}/"),
        client.get(f"/api/v1/staff/payments/{other_site_payment.id}/"),
        client.post(f"/api/v1/staff/payments/{their_payment.id}/retry/"),
    ]

    assert [a.status_code for a in answers] == [404] * 6
    assert answers[0].json() == {"code": "not_found", "message": "No such patient."}
    assert answers[2].json() == {"code": "not_found", "message": "No such site."}
    assert Payment.objects.count() == 2


@pytest.mark.django_db
def test_terminals_are_listed_only_where_the_staff_member_works(
    staff_api, practice, site, other_site
):
    front_desk = make_staff(Role.RECEPTION, practice=practice, sites=[site])
    mine = TerminalFactory(site=site, practice=practice, label="Desk")
    TerminalFactory(site=other_site, practice=practice, label="Upstairs")
    TerminalFactory(site=SiteFactory(practice=PracticeFactory()), label="Elsewhere")
    TerminalFactory(site=site, practice=practice, label="Retired", active=False)
    client = staff_api(front_desk)

    listed = client.get("/api/v1/staff/terminals/").json()["terminals"]
    filtered = client.get("/api/v1/staff/terminals/", {"site": str(other_site.id)}).json()
    bad = client.get("/api/v1/staff/terminals/", {"site": "nope"})

    assert [t["id"] for t in listed] == [str(mine.id)]
    assert listed[0] == {
        "id": str(mine.id),
        "label": "Desk",
        "kind": "countertop",
        "site_id": str(site.id),
        "site_name": site.name,
    }
    assert filtered == {"terminals": []}
    assert bad.status_code == 400 and bad.json()["field"] == "site"


@pytest.mark.django_db
def test_a_failed_terminal_payment_is_retried_once(
    staff_api, reception, reception_actor, practice, site, patient, terminal
):
    failed = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type="invoice",
        target_id="INV-R",
        amount="20.00",
        terminal=terminal,
    )
    services.payment_fail(
        payment_id=failed.id, actor=Actor.provider("dna"), code="declined", reason="Declined"
    )
    client = staff_api(reception)

    retried = client.post(f"/api/v1/staff/payments/{failed.id}/retry/")
    again = client.post(f"/api/v1/staff/payments/{failed.id}/retry/")

    assert retried.status_code == 201
    assert retried.json()["retry_of"] == str(failed.id) and retried.json()["state"] == "initiated"
    assert again.status_code == 400 and again.json()["code"] == "already_retried"


@pytest.mark.django_db
def test_the_portal_session_works_with_csrf(reception, patient, site):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reception)

    read = client.get("/api/v1/staff/terminals/")
    no_csrf = client.post(COLLECT, _body(patient, site), content_type="application/json")
    client.get("/accounts/login/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    with_csrf = client.post(
        COLLECT, _body(patient, site), content_type="application/json", HTTP_X_CSRFTOKEN=token
    )

    assert read.status_code == 200
    assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "permission_denied"
    assert "CSRF" in no_csrf.json()["message"]
    assert with_csrf.status_code == 201
