"""Step-up MFA (TOTP) for the virtual terminal and high-value refund approval, when a practice asks.

Enforced in the service layer (practices.access.require_recent_mfa), so the
portal, the API and any other caller get it; the portal sends the person to
the step-up page and back.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from django.db import connection
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from payments import services
from payments.models import ApprovalRequest, Payment, PaymentMethod, TargetType
from practices import mfa
from practices.access import MfaRequired, NotPermitted
from practices.models import StaffProfile, TotpDevice
from practices.roles import Role
from tests.factories import make_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def strict_practice(practice):
    practice.mfa_required = True
    practice.save(update_fields=["mfa_required"])
    return practice


@pytest.fixture
def operator(strict_practice):
    return make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=strict_practice)


def _vt(actor, practice, site, patient):
    return services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-MFA",
        amount="80.00",
        method=PaymentMethod.VIRTUAL_TERMINAL,
    )


def _enrol(user) -> pyotp.TOTP:
    """Enrol an authenticator the way a person does: start, then confirm with the app's code."""
    totp = pyotp.TOTP(mfa.mfa_enrol_start(user=user).secret)
    mfa.mfa_enrol_confirm(user=user, code=totp.now())
    return totp


def _next_code(totp: pyotp.TOTP) -> str:
    """The code of the next 30-second step (the current one was used; within the drift)."""
    return totp.at(timezone.now() + timedelta(seconds=30))


def _wrong_code(totp: pyotp.TOTP) -> str:
    """Six digits that match none of the steps the server accepts now."""
    now = timezone.now()
    window = {totp.at(now + timedelta(seconds=s)) for s in (-60, -30, 0, 30, 60)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in window)


def _make_stale(user):
    old = timezone.now() - timedelta(hours=1)
    StaffProfile.objects.filter(user=user).update(last_mfa_at=old)


def test_virtual_terminal_needs_a_recent_step_when_the_practice_requires_it(
    strict_practice, site, patient, operator
):
    actor = Actor.staff(operator)
    with pytest.raises(MfaRequired) as refused:
        _vt(actor, strict_practice, site, patient)
    assert refused.value.code == "mfa_required"
    assert not Payment.objects.exists()

    _enrol(operator)
    payment = _vt(actor, strict_practice, site, patient)
    assert payment.method == PaymentMethod.VIRTUAL_TERMINAL

    _make_stale(operator)
    with pytest.raises(MfaRequired):
        _vt(actor, strict_practice, site, patient)
    assert Payment.objects.count() == 1


def test_the_step_up_window_is_a_setting(settings, strict_practice, site, patient, operator):
    _enrol(operator)
    StaffProfile.objects.filter(user=operator).update(
        last_mfa_at=timezone.now() - timedelta(seconds=120)
    )
    settings.MFA_STEP_UP_SECONDS = 60
    with pytest.raises(MfaRequired):
        _vt(Actor.staff(operator), strict_practice, site, patient)
    settings.MFA_STEP_UP_SECONDS = 300
    assert _vt(Actor.staff(operator), strict_practice, site, patient).amount == 80


def test_no_step_needed_where_the_practice_does_not_ask(practice, site, patient):
    operator = make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=practice)
    assert practice.mfa_required is False
    assert _vt(Actor.staff(operator), practice, site, patient).method == "virtual_terminal"


def test_permission_is_checked_before_mfa(strict_practice, site, patient, reception):
    with pytest.raises(NotPermitted):
        _vt(Actor.staff(reception), strict_practice, site, patient)


@pytest.fixture
def pending_approval(strict_practice, site, patient, reception_actor, manager_actor):
    paid = services.payment_create(
        actor=reception_actor,
        practice=strict_practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-MFA",
        amount="900.00",
        method=PaymentMethod.CASH,
    )
    services.tender_record_received(payment_id=paid.id, actor=reception_actor)
    return services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="600.00", reason_code="billing_error"
    ).approval


def test_granting_a_high_value_refund_needs_a_recent_step(pending_approval, approver):
    actor = Actor.staff(approver)
    with pytest.raises(MfaRequired):
        services.approval_grant(approval_id=pending_approval.id, actor=actor)
    pending_approval.refresh_from_db()
    assert pending_approval.status == ApprovalRequest.Status.PENDING

    _enrol(approver)
    refund = services.approval_grant(approval_id=pending_approval.id, actor=actor)
    assert refund.amount == 600


def test_denying_needs_no_step(pending_approval, approver):
    services.approval_deny(approval_id=pending_approval.id, actor=Actor.staff(approver))
    pending_approval.refresh_from_db()
    assert pending_approval.status == ApprovalRequest.Status.DENIED


# --- the factor itself ---------------------------------------------------------------


def test_enrolment_is_audited_and_the_secret_is_encrypted_at_rest(operator, strict_practice):
    enrolment = mfa.mfa_enrol_start(user=operator)
    assert enrolment.provisioning_uri.startswith("otpauth://totp/")
    assert mfa.mfa_enrol_start(user=operator).secret == enrolment.secret  # a reload shows the same

    mfa.mfa_enrol_confirm(user=operator, code=pyotp.TOTP(enrolment.secret).now())

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM practices_totpdevice WHERE user_id = %s", [operator.pk])
        stored = cursor.fetchone()[0]
    assert enrolment.secret not in stored and stored.startswith("gAAAAA")
    assert TotpDevice.objects.get(user=operator).secret == enrolment.secret
    event = AuditEvent.objects.get(event_type=EventType.STAFF_MFA_ENROLLED)
    assert (event.practice_id, event.subject_id) == (strict_practice.id, str(operator.pk))
    assert enrolment.secret not in str(event.payload)
    with pytest.raises(mfa.MfaError) as again:
        mfa.mfa_enrol_start(user=operator)
    assert again.value.code == "mfa_enrolled"


def test_a_code_cannot_be_used_twice(operator):
    totp = pyotp.TOTP(mfa.mfa_enrol_start(user=operator).secret)
    code = totp.now()
    mfa.mfa_enrol_confirm(user=operator, code=code)

    with pytest.raises(mfa.MfaError) as replay:
        mfa.mfa_verify(user=operator, code=code)
    assert replay.value.code == "mfa_invalid"
    assert mfa.mfa_verify(user=operator, code=_next_code(totp)).last_mfa_at is not None


def test_wrong_codes_lock_the_device(settings, operator):
    settings.MFA_MAX_FAILURES = 3
    totp = _enrol(operator)
    before = StaffProfile.objects.get(user=operator).last_mfa_at
    for _ in range(3):
        with pytest.raises(mfa.MfaError):
            mfa.mfa_verify(user=operator, code=_wrong_code(totp))

    with pytest.raises(mfa.MfaError) as locked:
        mfa.mfa_verify(user=operator, code=_next_code(totp))
    assert locked.value.code == "mfa_locked"
    assert StaffProfile.objects.get(user=operator).last_mfa_at == before


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x", "١٢٣٤٥٦"])
def test_malformed_codes_are_refused(operator, code):
    _enrol(operator)
    with pytest.raises(mfa.MfaError):
        mfa.mfa_verify(user=operator, code=code)


def test_reset_removes_the_device_and_the_step(operator):
    _enrol(operator)
    assert mfa.mfa_reset(user=operator) is True
    assert not TotpDevice.objects.filter(user=operator).exists()
    assert StaffProfile.objects.get(user=operator).last_mfa_at is None


# --- the portal ---------------------------------------------------------------------


def _secret_on(page: str) -> str:
    return re.search(r'<code id="mfa-secret">([A-Z2-7]+)</code>', page).group(1)


def test_portal_sends_the_operator_to_enrol_and_back_to_the_drawer(
    client, dna, strict_practice, site, patient, operator
):
    client.force_login(operator)
    drawer = f"/patients/{patient.id}/pay/?target_type=invoice&target_id=INV-MFA&total=80.00"
    form = {
        "site": str(site.id),
        "target_type": "invoice",
        "target_id": "INV-MFA",
        "invoice_total": "80.00",
        "amount_choice": "total",
        "method": "virtual_terminal",
    }

    refused = client.post(drawer, form, headers={"Referer": f"http://testserver{drawer}"})

    assert refused.status_code == 302
    location = urlparse(refused["Location"])
    assert location.path == "/staff/mfa/"
    assert parse_qs(location.query)["next"] == [f"http://testserver{drawer}"]
    assert not Payment.objects.exists()

    page = client.get(refused["Location"])
    assert page.status_code == 200 and "Set up your authenticator app" in page.content.decode()
    totp = pyotp.TOTP(_secret_on(page.content.decode()))

    wrong_password = client.post(
        refused["Location"],
        {"password": "not-it", "code": totp.now(), "next": f"http://testserver{drawer}"},
    )
    assert wrong_password.status_code == 400
    assert not mfa.is_enrolled(operator)

    confirmed = client.post(
        refused["Location"],
        {"password": "pass-word-123", "code": totp.now(), "next": f"http://testserver{drawer}"},
    )
    assert confirmed.status_code == 302 and confirmed["Location"] == f"http://testserver{drawer}"

    taken = client.post(drawer, form)
    payment = Payment.objects.get()
    assert taken["Location"] == f"/payments/{payment.id}/virtual-terminal/"


def test_portal_approval_comes_back_to_the_queue_after_the_step(client, pending_approval, approver):
    totp = _enrol(approver)
    _make_stale(approver)
    client.force_login(approver)

    refused = client.post(
        f"/approvals/{pending_approval.id}/decide/",
        {"decision": "grant", "note": ""},
        headers={"Referer": "http://testserver/approvals/"},
    )
    assert refused.status_code == 302
    assert refused["Location"] == "/staff/mfa/?next=http%3A%2F%2Ftestserver%2Fapprovals%2F"
    page = client.get(refused["Location"]).content.decode()
    assert "Set up your authenticator" not in page and "Code from your authenticator app" in page

    stepped = client.post(refused["Location"], {"code": _next_code(totp)})
    assert stepped["Location"] == "http://testserver/approvals/"
    client.post(f"/approvals/{pending_approval.id}/decide/", {"decision": "grant", "note": ""})
    pending_approval.refresh_from_db()
    assert pending_approval.status == ApprovalRequest.Status.GRANTED


def test_step_up_never_redirects_off_site(client, operator):
    totp = _enrol(operator)
    client.force_login(operator)
    response = client.post(
        "/staff/mfa/?next=https://evil.example/steal", {"code": _next_code(totp)}
    )
    assert response.status_code == 302 and response["Location"] == "/"


def test_step_up_page_is_for_staff_accounts(client, django_user_model):
    user = django_user_model.objects.create_user("not-staff", password="pass-word-123")
    client.force_login(user)
    assert client.get("/staff/mfa/").status_code == 403
