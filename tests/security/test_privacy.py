"""GDPR (§14): a patient's subject access export, and erasure that keeps what retention requires.

The erasure test runs every kind of record a patient can have through the real
services, erases, and then reads every column of every table: the name, email
and phone are nowhere — which also proves the audit and outbox payloads never
held them (the audit table cannot be changed, so erasure never touches it).
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from audit.verify import verify_chain
from integrations.models import Destination, OutboxMessage
from payments import deposits, flows, services
from payments.models import Payment, PaymentMethod, PaymentState, Refund, TargetType
from practices import privacy
from practices.access import NotPermitted
from practices.models import Patient
from practices.roles import Role
from primoro_payments.pan import iter_card_numbers
from tests.factories import PatientFactory, PracticeFactory, make_staff

pytestmark = pytest.mark.django_db

NAME = "Augusta Ada Lovelace-Byron"
EMAIL = "augusta.byron@example.org"
PHONE = "+44 7700 900456"


@pytest.fixture
def person(practice):
    return PatientFactory(
        practice=practice, display_name=NAME, email=EMAIL, phone=PHONE, pms_patient_id="PMS-ADA"
    )


@pytest.fixture
def compliance(practice):
    return make_staff(Role.COMPLIANCE_ADMIN, practice=practice)


@pytest.fixture
def history(practice, site, person, reception_actor, manager_actor, provider_actor):
    """Everything a patient can have: paid, refunded, a link, a deposit, an approval."""
    common = dict(practice=practice, site=site, patient=person, target_type=TargetType.INVOICE)
    cash = services.payment_create(
        actor=reception_actor, target_id="INV-A1", amount="120.00", method="cash", **common
    )
    services.tender_record_received(payment_id=cash.id, actor=reception_actor)
    services.refund_request(
        payment_id=cash.id,
        actor=manager_actor,
        amount="20.00",
        reason_code="patient_request",
        notes="partial goodwill refund",
    )
    big = services.payment_create(
        actor=reception_actor, target_id="INV-A2", amount="900.00", method="cash", **common
    )
    services.tender_record_received(payment_id=big.id, actor=reception_actor)
    services.refund_request(
        payment_id=big.id, actor=manager_actor, amount="500.00", reason_code="billing_error"
    )
    link = flows.pay_by_link_issue(
        actor=reception_actor, target_id="INV-A3", amount="60.00", channel="email", **common
    )
    services.payment_capture(payment_id=link.link.payment_id, actor=provider_actor)
    deposit = deposits.deposit_request(
        actor=Actor.system("appointment_manager"),
        practice=practice,
        site=site,
        patient=person,
        appointment_id="APT-ADA",
        amount="50.00",
        channel="sms",
    )
    services.payment_capture(payment_id=deposit.payment_id, actor=provider_actor)
    return {"cash": cash, "big": big, "link": link.link, "deposit": deposit}


def test_subject_access_export_has_their_records_and_no_card_data(
    history, person, compliance, practice, site, reception_actor
):
    someone_else = PatientFactory(practice=practice, display_name="Someone Else")
    services.payment_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=someone_else,
        target_type=TargetType.INVOICE,
        target_id="INV-OTHER",
        amount="10.00",
        method="cash",
    )

    document = privacy.subject_access_export(patient_id=person.id, actor=Actor.staff(compliance))

    text = json.dumps(document, default=str)
    assert document["format"] == "primoro.subject_access_export"
    assert (document["patient"]["display_name"], document["patient"]["email"]) == (NAME, EMAIL)
    assert document["patient"]["phone"] == PHONE
    assert {p["target_id"] for p in document["payments"]} == {
        "INV-A1",
        "INV-A2",
        "INV-A3",
        document["payments"][3]["target_id"],
    }
    assert "INV-OTHER" not in text and "Someone Else" not in text
    assert [r["amount"] for r in document["refunds"]] == [history["cash"].refunds.get().amount]
    assert [a["status"] for a in document["refund_approvals"]] == ["pending"]
    assert [link["channel"] for link in document["payment_links"]] == ["email", "sms"]
    assert [d["appointment_id"] for d in document["deposits"]] == ["APT-ADA"]
    sent = {m["event_type"] for m in document["communications"]}
    assert sent and all(
        OutboxMessage.objects.get(pk=m["id"]).destination == Destination.COMMUNICATION_HUB
        for m in document["communications"]
    )
    events = {e["event_type"] for e in document["audit_events"]}
    assert {"payment.initiated", "payment.partially_refunded", "approval.required"} <= events
    assert document["retention"]["financial_records_years"] == 6
    # Never card data, provider card tokens or staff names.
    assert list(iter_card_numbers(text)) == []
    assert "payment_profile_id" not in text and "card" not in text.lower()
    assert compliance.last_name not in text
    exported = AuditEvent.objects.get(event_type=EventType.PATIENT_DATA_EXPORTED)
    assert (exported.subject_type, exported.subject_id) == ("patient", str(person.id))
    assert NAME not in json.dumps(exported.payload)


def test_export_needs_the_compliance_permission_in_the_patients_practice(person, reception):
    with pytest.raises(NotPermitted):
        privacy.subject_access_export(patient_id=person.id, actor=Actor.staff(reception))
    outsider = make_staff(Role.COMPLIANCE_ADMIN, practice=PracticeFactory())
    with pytest.raises(NotPermitted):
        privacy.subject_access_export(patient_id=person.id, actor=Actor.staff(outsider))
    assert not AuditEvent.objects.filter(event_type=EventType.PATIENT_DATA_EXPORTED).exists()


def test_portal_download_for_compliance_admins(client, history, person, compliance, reception):
    client.force_login(reception)
    assert client.get(f"/staff/patients/{person.id}/data-export/").status_code == 403

    client.force_login(make_staff(Role.COMPLIANCE_ADMIN, practice=PracticeFactory()))
    assert client.get(f"/staff/patients/{person.id}/data-export/").status_code == 404

    client.force_login(compliance)
    response = client.get(f"/staff/patients/{person.id}/data-export/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    assert "attachment" in response["Content-Disposition"]
    assert json.loads(response.content)["patient"]["email"] == EMAIL


def test_export_command(history, person, tmp_path):
    out = StringIO()
    call_command("subject_access_export", str(person.id), stdout=out)
    assert json.loads(out.getvalue())["patient"]["pms_patient_id"] == "PMS-ADA"

    target = tmp_path / "sar.json"
    call_command(
        "subject_access_export",
        "PMS-ADA",
        "--practice",
        str(person.practice_id),
        "--output",
        str(target),
        stderr=StringIO(),
    )
    assert len(json.loads(target.read_text())["payments"]) == 4
    assert AuditEvent.objects.filter(event_type=EventType.PATIENT_DATA_EXPORTED).count() == 2


def _everything_in_the_database() -> str:
    """Every column of every table as JSON text, with encrypted columns decrypted."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT row_to_json(t)::text FROM {connection.ops.quote_name(table)} t")
            parts.extend(row[0] for row in cursor.fetchall())
    for patient in Patient.objects.all():
        parts.append(f"{patient.email} {patient.phone}")
    return "\n".join(parts)


def test_erasure_pseudonymises_and_keeps_the_financial_records(history, person, practice):
    payments_before = list(Payment.objects.filter(patient=person).values("id", "state", "amount"))
    refunds_before = Refund.objects.filter(payment__patient=person).count()
    assert NAME in _everything_in_the_database()

    result = privacy.patient_erase(
        patient_id=person.id, actor=Actor.system("erase_patient"), request_reference="DSR-2026-17"
    )

    person.refresh_from_db()
    assert result.changed is True
    assert person.display_name == f"Erased patient {person.id.hex[:8]}"
    assert (person.email, person.phone, person.pms_patient_id) == ("", "", "PMS-ADA")
    assert person.erased_at is not None
    assert list(Payment.objects.filter(patient=person).values("id", "state", "amount")) == (
        payments_before
    )
    assert Refund.objects.filter(payment__patient=person).count() == refunds_before
    everything = _everything_in_the_database()
    for personal in (NAME, "Lovelace", EMAIL, "augusta", PHONE, "900456"):
        assert personal not in everything, personal
    assert verify_chain(practice.id).ok
    erased = AuditEvent.objects.get(event_type=EventType.PATIENT_ERASED)
    assert erased.payload["fields"] == ["display_name", "email", "phone"]
    assert erased.payload["request_reference"] == "DSR-2026-17"
    last = Payment.objects.filter(patient=person).latest("created_at").created_at
    assert result.retained_until == last.replace(year=last.year + 6)

    again = privacy.patient_erase(patient_id=person.id, actor=Actor.system("erase_patient"))
    assert again.changed is False
    assert AuditEvent.objects.filter(event_type=EventType.PATIENT_ERASED).count() == 1


def test_erasure_waits_for_a_payment_in_progress(person, practice, site, reception_actor):
    services.payment_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=person,
        target_type=TargetType.INVOICE,
        target_id="INV-OPEN",
        amount="10.00",
        method=PaymentMethod.PAY_BY_LINK,
    )
    with pytest.raises(privacy.PrivacyError) as refused:
        privacy.patient_erase(patient_id=person.id, actor=Actor.system("erase_patient"))
    assert refused.value.code == "payment_in_progress"
    person.refresh_from_db()
    assert (person.display_name, person.erased_at) == (NAME, None)


def test_the_request_reference_is_a_ticket_id_not_free_text(person):
    with pytest.raises(privacy.PrivacyError) as refused:
        privacy.patient_erase(
            patient_id=person.id,
            actor=Actor.system("erase_patient"),
            request_reference=f"request from {NAME}",
        )
    assert refused.value.code == "invalid_reference"
    assert not AuditEvent.objects.filter(event_type=EventType.PATIENT_ERASED).exists()


def test_erase_command(person, practice):
    out = StringIO()
    call_command("erase_patient", str(person.id), "--yes", "--request", "DSR-1", stdout=out)
    person.refresh_from_db()
    assert person.erased_at is not None
    assert "kept (there are none)" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("erase_patient", "not-a-patient", "--yes")


def test_retention_follows_the_setting(settings, history, person):
    settings.RETENTION_FINANCIAL_YEARS = 7
    last = Payment.objects.filter(patient=person).latest("created_at").created_at
    assert privacy.retained_until(person) == last.replace(year=last.year + 7)
    assert privacy.retained_until(PatientFactory(practice=person.practice)) is None


def test_payments_keep_their_state_after_erasure(history, person, provider_actor):
    privacy.patient_erase(patient_id=person.id, actor=Actor.system("erase_patient"))
    states = set(Payment.objects.filter(patient=person).values_list("state", flat=True))
    assert states <= {PaymentState.CAPTURED, PaymentState.PARTIALLY_REFUNDED}
    # Retention is counted from the records, not the erasure.
    assert privacy.retained_until(person) > timezone.now() + timedelta(days=365 * 5)
