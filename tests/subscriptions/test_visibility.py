"""Status by patient and module, tenant-scoped; a read-only admin; a fixed PaymentMandateRef."""

from __future__ import annotations

import re

import pytest
from django.db import DatabaseError, IntegrityError, transaction

from practices.roles import Role
from subscriptions.models import SubscriptionMandate, SubscriptionPayment
from subscriptions.selectors import subscription_payments_visible_to, subscription_statuses
from tests.factories import PatientFactory, PracticeFactory, make_staff
from tests.subscriptions.conftest import publish, scenario

pytestmark = pytest.mark.django_db


@pytest.fixture
def landscape(deliver, gc_api, practice, patient):
    """Care Plan paid and Hygiene failed for our patient; a cancelled mandate for another;
    and a paid payment at another practice."""
    other_patient = PatientFactory(practice=practice)
    elsewhere = PracticeFactory()
    stranger = PatientFactory(practice=elsewhere)
    sent = [
        scenario("payment_confirmed", practice, patient, module="care_plan", mandate_ref="CP-A"),
        scenario("payment_failed", practice, patient, module="hygiene", mandate_ref="HY-A"),
        scenario(
            "mandate_cancelled", practice, other_patient, module="hygiene", mandate_ref="HY-B"
        ),
        scenario("payment_confirmed", elsewhere, stranger, module="care_plan", mandate_ref="CP-X"),
    ]
    for built in sent:
        publish(gc_api, built)
    deliver([event for built in sent for event in built.events])
    return {"other_patient": other_patient, "elsewhere": elsewhere}


def test_status_by_patient_and_module(landscape, practice, patient, reception):
    rows = {(r.patient_id, r.module): r for r in subscription_statuses(reception)}

    assert {key: (r.state, r.mandate_reference) for key, r in rows.items()} == {
        (patient.id, "care_plan"): ("paid", "CP-A"),
        (patient.id, "hygiene"): ("failed", "HY-A"),
        (landscape["other_patient"].id, "hygiene"): ("cancelled", "HY-B"),
    }
    assert rows[(patient.id, "hygiene")].failure_reason_code == "ARUDD-0"


def test_statuses_filter_by_module_patient_and_state(landscape, patient, reception):
    hygiene = subscription_statuses(reception, module="hygiene")
    mine = subscription_statuses(reception, patient_id=patient.id)
    failed = subscription_statuses(reception, state="failed")

    assert sorted(r.mandate_reference for r in hygiene) == ["HY-A", "HY-B"]
    assert sorted(r.module for r in mine) == ["care_plan", "hygiene"]
    assert [r.mandate_reference for r in failed] == ["HY-A"]


def test_another_practice_sees_only_its_own(landscape):
    theirs = make_staff(Role.RECEPTION, practice=landscape["elsewhere"])

    assert [r.mandate_reference for r in subscription_statuses(theirs)] == ["CP-X"]
    assert [p.mandate_reference for p in subscription_payments_visible_to(theirs)] == ["CP-X"]


def test_the_status_view_reads_in_a_fixed_number_of_queries(
    landscape, reception, django_assert_max_num_queries
):
    with django_assert_max_num_queries(4):
        assert len(subscription_statuses(reception)) == 3


def test_the_admin_lists_own_practice_records_read_only(landscape, client, practice):
    finance = make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)
    client.force_login(finance)
    payment = SubscriptionPayment.objects.get(mandate_reference="CP-A")
    foreign = SubscriptionPayment.objects.get(mandate_reference="CP-X")

    listing = client.get("/admin/subscriptions/subscriptionpayment/")
    detail = client.get(f"/admin/subscriptions/subscriptionpayment/{payment.pk}/change/")
    foreign_detail = client.get(f"/admin/subscriptions/subscriptionpayment/{foreign.pk}/change/")
    add = client.get("/admin/subscriptions/subscriptionpayment/add/")
    mandates = client.get("/admin/subscriptions/subscriptionmandate/")

    assert listing.status_code == 200
    assert "CP-A" in listing.text and "HY-A" in listing.text and "CP-X" not in listing.text
    assert detail.status_code == 200 and 'name="_save"' not in detail.text
    assert foreign_detail.status_code == 302  # "doesn't exist" for another practice's record
    assert add.status_code == 403
    assert mandates.status_code == 200 and "HY-B" in mandates.text


def test_the_guardian_sees_a_clean_state_and_no_card_data(landscape):
    payment = SubscriptionPayment.objects.get(mandate_reference="CP-A")
    signal = {field: getattr(payment, field) for field in SubscriptionPayment.GUARDIAN_FIELDS}

    assert signal["state"] in {"active_mandate", "payment_pending", "paid", "failed", "cancelled"}
    assert {"mandate_reference", "amount", "currency", "updated_at", "site_id"} <= set(signal)
    field_names = {f.name for f in SubscriptionPayment._meta.get_fields()}
    card_like = re.compile(r"(^|_)(pan|cvv|cvc|card|token|account_number|sort_code)(_|$)")
    assert [name for name in field_names if card_like.search(name)] == []


def test_the_mandate_reference_cannot_be_changed_in_the_database(landscape):
    payment = SubscriptionPayment.objects.get(mandate_reference="CP-A")
    mandate = payment.mandate

    with pytest.raises(DatabaseError, match="Cannot update"), transaction.atomic():
        SubscriptionPayment.objects.filter(pk=payment.pk).update(mandate_reference="OURS-1")
    with pytest.raises(DatabaseError, match="Cannot update"), transaction.atomic():
        SubscriptionMandate.objects.filter(pk=mandate.pk).update(mandate_reference="OURS-1")
    blank = SubscriptionMandate(
        practice_id=mandate.practice_id,
        patient_id=mandate.patient_id,
        module="care_plan",
        gocardless_mandate_id="MD0000BLANK",
        mandate_reference="",
        state="active_mandate",
        gocardless_status="active",
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        blank.save()  # a reference is required: we never make one up

    SubscriptionPayment.objects.filter(pk=payment.pk).update(payout_id="PO1")  # others may change
    payment.refresh_from_db()
    assert (payment.mandate_reference, payment.payout_id) == ("CP-A", "PO1")
