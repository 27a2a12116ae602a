"""Patient endpoints: what counts as an outstanding balance, receipts, and own records only."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.actors import Actor
from payments import deposits, services
from payments.links import payment_link_cancel
from payments.models import PaymentLink, PaymentMethod, ReasonCode, TargetType
from payments.services import RewardsCredit
from tests.api.conftest import link_balance, online_balance, paid
from tests.factories import PatientFactory, PracticeFactory, SiteFactory
from tests.payments.helpers import new_payment
from tests.providers.conftest import has_card_number

pytestmark = pytest.mark.django_db

BALANCES = "/api/v1/patient/balances/"
RECEIPTS = "/api/v1/patient/receipts/"
SYSTEM = Actor.system("appointment_manager")


def _ids(response) -> list[str]:
    return [b["id"] for b in response.json()["balances"]]


def test_requested_payments_are_outstanding_and_nothing_else_is(
    patient_api, reception_actor, practice, site, patient, terminal
):
    link = link_balance(reception_actor, practice, site, patient, amount="80.00")
    request = online_balance(reception_actor, practice, site, patient, amount="45.00")
    deposit = deposits.deposit_request(
        actor=SYSTEM,
        practice=practice,
        site=site,
        patient=patient,
        appointment_id="APT-77",
        amount="50.00",
    )
    # Not balances: a terminal payment in the practice, the patient's own checkout,
    # an expired link, a cancelled link, a paid one.
    new_payment(reception_actor, practice, site, patient, terminal=terminal)
    online_balance(Actor.for_patient(patient), practice, site, patient, target_id="OWN-1")
    expired = link_balance(reception_actor, practice, site, patient, target_id="INV-OLD")
    PaymentLink.objects.filter(pk=expired.link.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    cancelled = link_balance(reception_actor, practice, site, patient, target_id="INV-CAN")
    payment_link_cancel(link_id=cancelled.link.pk, actor=reception_actor)
    paid(online_balance(reception_actor, practice, site, patient, target_id="REQ-PAID"))

    response = patient_api(patient).get(BALANCES)

    assert response.status_code == 200
    body = response.json()
    assert sorted(_ids(response)) == sorted(
        [str(link.link.payment_id), str(request.id), str(deposit.payment_id)]
    )
    assert body["total"] == {"GBP": "175.00"}
    by_id = {b["id"]: b for b in body["balances"]}
    first = by_id[str(link.link.payment_id)]
    assert first["kind"] == "invoice" and first["description"] == "Invoice INV-4242"
    assert first["amount"] == "80.00" and first["currency"] == "GBP"
    assert first["practice"] == {"id": str(practice.id), "name": practice.name}
    assert first["link_expires_at"] is not None and first["last_attempt_failed"] is False
    assert by_id[str(deposit.payment_id)]["kind"] == "deposit"
    assert by_id[str(request.id)]["link_expires_at"] is None


def test_due_dates_order_the_list_and_mark_overdue_balances(
    patient_api, reception_actor, practice, site, patient
):
    later = online_balance(reception_actor, practice, site, patient, target_id="REQ-LATER")
    overdue = online_balance(reception_actor, practice, site, patient, target_id="REQ-LATE")
    undated = online_balance(reception_actor, practice, site, patient, target_id="REQ-NODATE")
    now = timezone.now()
    services.payment_set_due(payment_id=later.id, actor=SYSTEM, due_at=now + timedelta(days=5))
    services.payment_set_due(payment_id=overdue.id, actor=SYSTEM, due_at=now - timedelta(days=2))

    body = patient_api(patient).get(BALANCES).json()["balances"]

    assert [b["id"] for b in body] == [str(overdue.id), str(later.id), str(undated.id)]
    assert [b["overdue"] for b in body] == [True, False, False]
    assert body[0]["due_at"] is not None and body[2]["due_at"] is None


def test_a_rewards_credit_reduces_what_the_balance_asks_for(
    patient_api, reception_actor, practice, site, patient
):
    online_balance(
        reception_actor,
        practice,
        site,
        patient,
        amount="100.00",
        rewards_credit=RewardsCredit(Decimal("15.00"), "RW-1"),
    )

    [balance] = patient_api(patient).get(BALANCES).json()["balances"]

    assert balance["amount"] == "85.00" and balance["rewards_credit"] == "15.00"


def test_a_patient_only_ever_sees_their_own_records(
    patient_api, reception_actor, practice, site, patient, terminal
):
    other = PatientFactory(practice=practice)
    theirs = link_balance(reception_actor, practice, site, other)
    their_receipt = paid(online_balance(reception_actor, practice, site, other, target_id="R-9"))
    client = patient_api(patient)
    balance_id = theirs.link.payment_id

    answers = [
        client.get(f"{BALANCES}{balance_id}/"),
        client.post(f"{BALANCES}{balance_id}/pay/"),
        client.get(f"/api/v1/patient/payments/{balance_id}/"),
        client.get(f"{RECEIPTS}{their_receipt.id}/"),
        client.get(f"/api/v1/patient/payments/{their_receipt.id}/"),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404, 404, 404]
    assert answers[0].json() == {"code": "not_found", "message": "No such balance."}
    assert client.get(BALANCES).json()["balances"] == []
    assert client.get(RECEIPTS).json()["results"] == []
    # and the owner sees them
    owner = patient_api(other)
    assert owner.get(f"{BALANCES}{balance_id}/").status_code == 200
    assert owner.get(f"{RECEIPTS}{their_receipt.id}/").status_code == 200


def test_another_practices_patient_with_the_same_pms_id_sees_nothing_of_ours(
    patient_api, reception_actor, practice, site, patient
):
    elsewhere = PracticeFactory()
    SiteFactory(practice=elsewhere)
    twin = PatientFactory(practice=elsewhere, pms_patient_id=patient.pms_patient_id)
    link_balance(reception_actor, practice, site, patient)

    assert patient_api(twin).get(BALANCES).json()["balances"] == []
    assert len(patient_api(patient).get(BALANCES).json()["balances"]) == 1


def test_malformed_ids_are_not_found(patient_api, patient):
    client = patient_api(patient)

    for url in (f"{BALANCES}not-a-uuid/", f"{RECEIPTS}123/", "/api/v1/patient/payments/x/"):
        answer = client.get(url)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"


def test_receipts_show_credit_refunds_and_nothing_card_adjacent(
    patient_api, reception_actor, manager_actor, provider_actor, practice, site, patient
):
    with_credit = paid(
        online_balance(
            reception_actor,
            practice,
            site,
            patient,
            amount="120.00",
            target_id="INV-9",
            target_type=TargetType.INVOICE,
            rewards_credit=RewardsCredit(Decimal("20.00"), "RW-9"),
        )
    )
    refund = services.refund_request(
        payment_id=with_credit.id,
        actor=manager_actor,
        amount="30.00",
        reason_code=ReasonCode.BILLING_ERROR,
        notes="Staff-only note",
    ).refund
    services.refund_complete(refund_id=refund.id, actor=provider_actor, provider_reference="rf-1")
    plain = paid(online_balance(reception_actor, practice, site, patient, target_id="REQ-2"))

    response = patient_api(patient).get(RECEIPTS)

    assert response.status_code == 200
    receipts = response.json()["results"]
    assert [r["id"] for r in receipts] == [str(plain.id), str(with_credit.id)]
    receipt = receipts[1]
    assert receipt["amount"] == "120.00"
    assert receipt["rewards_credit"] == {"amount": "20.00", "reference": "RW-9"}
    assert receipt["charged_amount"] == "100.00"
    assert receipt["refunded_amount"] == "30.00"
    assert receipt["status"] == "refunded" and receipt["method"] == "online"
    assert receipt["invoice_reference"] == "INV-9"
    [shown] = receipt["refunds"]
    assert shown["amount"] == "30.00" and shown["status"] == "succeeded"
    assert shown["reason"] == "Billing error"
    assert receipts[0]["rewards_credit"] is None and receipts[0]["refunds"] == []
    text = response.content.decode()
    assert "Staff-only note" not in text and "txn-" not in text
    assert not has_card_number(text)
    for word in ("card", "pan", "expiry", "cardholder", "token"):
        assert word not in text.lower()


def test_receipts_are_paged_with_a_cursor(patient_api, reception_actor, practice, site, patient):
    made = [
        paid(online_balance(reception_actor, practice, site, patient, target_id=f"R-{n}"))
        for n in range(5)
    ]
    client = patient_api(patient)

    first = client.get(RECEIPTS, {"limit": 2}).json()
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()

    seen = [r["id"] for page in (first, second, third) for r in page["results"]]
    assert seen == [str(p.id) for p in reversed(made)]
    assert third["next"] is None
    bad = client.get(RECEIPTS, {"cursor": "garbage"})
    assert bad.status_code == 404 and bad.json()["code"] == "not_found"


def test_a_payment_can_be_followed_by_its_owner(
    patient_api, reception_actor, practice, site, patient
):
    request = online_balance(reception_actor, practice, site, patient)
    client = patient_api(patient)

    before = client.get(f"/api/v1/patient/payments/{request.id}/").json()
    paid(request)
    after = client.get(f"/api/v1/patient/payments/{request.id}/").json()

    assert before["status"] == "pending" and before["paid_at"] is None
    assert after["status"] == "paid" and after["state"] == "captured"
    assert after["amount"] == "45.00" and after["paid_at"] is not None


def test_card_on_file_instalments_are_not_balances(patient_api, practice, site, patient):
    services.payment_create(
        actor=Actor.system("smart_treatment_proposals"),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.PAYMENT_REQUEST,
        target_id="PROP-1#1",
        amount="60.00",
        method=PaymentMethod.CARD_ON_FILE,
        payment_profile_id="PP-1",
    )

    assert patient_api(patient).get(BALANCES).json()["balances"] == []
