"""Staff exceptions on deposits: waive, refund, override — each with a reason, a role and an audit row."""

from __future__ import annotations

import pytest

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import OutboxMessage
from payments import deposits, services
from payments.errors import InvalidTransition, PaymentError
from payments.models import DepositStatus, PaymentLink, PaymentState, Refund
from practices.access import NotPermitted
from practices.roles import Role
from tests.factories import make_staff

pytestmark = pytest.mark.django_db

AM = Actor.system("appointment_manager")


@pytest.fixture
def deposit(practice, site, patient):
    return deposits.deposit_request(
        actor=AM,
        practice=practice,
        site=site,
        patient=patient,
        appointment_id="APT-9",
        amount="60.00",
        channel="app",
    )


@pytest.fixture
def paid_deposit(deposit, provider_actor):
    services.payment_capture(payment_id=deposit.payment_id, actor=provider_actor)
    deposit.refresh_from_db()
    assert deposit.status == DepositStatus.PAID
    return deposit


def _last_audit(event_type):
    return AuditEvent.objects.filter(event_type=event_type).order_by("seq").last()


# --- waive -------------------------------------------------------------------------------


def test_finance_staff_waive_a_requested_deposit_with_a_reason(deposit, finance_actor):
    deposits.deposit_waive(
        deposit_id=deposit.id, actor=finance_actor, reason="Long-standing patient"
    )

    deposit.refresh_from_db()
    assert (deposit.status, deposit.status_reason) == (
        DepositStatus.WAIVED,
        "Long-standing patient",
    )
    assert deposit.payment.state == PaymentState.VOIDED
    assert PaymentLink.objects.get(payment=deposit.payment).status == PaymentLink.Status.CANCELLED
    audit = _last_audit(EventType.DEPOSIT_STATUS_CHANGED)
    assert (audit.from_state, audit.to_state) == ("requested", "waived")
    assert (audit.actor_kind, audit.actor_id) == ("staff", finance_actor.id)
    assert audit.payload["reason"] == "Long-standing patient"
    void = _last_audit(EventType.PAYMENT_VOIDED)
    assert (void.actor_id, void.payment_id) == (finance_actor.id, deposit.payment_id)


@pytest.mark.parametrize("role", [Role.RECEPTION, Role.REFUND_MANAGER, Role.COMPLIANCE_ADMIN])
def test_staff_without_manage_exceptions_cannot_waive(deposit, practice, role):
    staff = Actor.staff(make_staff(role, practice=practice))

    with pytest.raises(NotPermitted):
        deposits.deposit_waive(deposit_id=deposit.id, actor=staff, reason="Because")

    deposit.refresh_from_db()
    assert deposit.status == DepositStatus.REQUESTED
    assert deposit.payment.state == PaymentState.AWAITING_CUSTOMER_ACTION


def test_staff_of_another_practice_cannot_waive(deposit, other_practice):
    outsider = Actor.staff(make_staff(Role.FINANCE_ADMIN, practice=other_practice))

    with pytest.raises(NotPermitted):
        deposits.deposit_waive(deposit_id=deposit.id, actor=outsider, reason="Because")


def test_a_waiver_needs_a_reason(deposit, finance_actor):
    with pytest.raises(PaymentError) as refused:
        deposits.deposit_waive(deposit_id=deposit.id, actor=finance_actor, reason="  ")

    assert (refused.value.code, refused.value.field) == ("reason_required", "reason")
    assert not AuditEvent.objects.filter(to_state="waived").exists()


def test_a_paid_deposit_cannot_be_waived(paid_deposit, finance_actor):
    with pytest.raises(InvalidTransition):
        deposits.deposit_waive(deposit_id=paid_deposit.id, actor=finance_actor, reason="Too late")


# --- refund ------------------------------------------------------------------------------


def test_a_refund_manager_refunds_a_paid_deposit_and_it_is_refunded_when_dna_confirms(
    paid_deposit, practice, provider_actor
):
    manager = Actor.staff(make_staff(Role.REFUND_MANAGER, practice=practice))

    result = deposits.deposit_refund(
        deposit_id=paid_deposit.id, actor=manager, reason="Appointment cancelled by practice"
    )

    refund = result.refund
    assert (refund.amount, refund.status, refund.notes) == (
        paid_deposit.amount,
        Refund.Status.PENDING,
        "Appointment cancelled by practice",
    )
    requested = _last_audit(EventType.DEPOSIT_REFUND_REQUESTED)
    assert (requested.actor_id, requested.payload["refund_id"]) == (manager.id, str(refund.id))
    paid_deposit.refresh_from_db()
    assert paid_deposit.status == DepositStatus.PAID  # money not back yet

    services.refund_complete(refund_id=refund.id, actor=provider_actor, provider_reference="rf-1")

    paid_deposit.refresh_from_db()
    assert paid_deposit.status == DepositStatus.REFUNDED
    change = _last_audit(EventType.DEPOSIT_STATUS_CHANGED)
    assert (change.from_state, change.to_state) == ("paid", "refunded")


def test_reception_cannot_refund_a_deposit(paid_deposit, reception_actor):
    with pytest.raises(NotPermitted):
        deposits.deposit_refund(deposit_id=paid_deposit.id, actor=reception_actor, reason="x")

    assert not Refund.objects.exists()


def test_an_unpaid_deposit_cannot_be_refunded(deposit, finance_actor):
    with pytest.raises(InvalidTransition):
        deposits.deposit_refund(deposit_id=deposit.id, actor=finance_actor, reason="x")


def test_a_deposit_refund_above_the_threshold_waits_for_an_approver(
    practice, site, patient, finance_actor, provider_actor
):
    big = deposits.deposit_request(
        actor=AM,
        practice=practice,
        site=site,
        patient=patient,
        appointment_id="BIG",
        amount="400.00",
    )
    services.payment_capture(payment_id=big.payment_id, actor=provider_actor)

    result = deposits.deposit_refund(
        deposit_id=big.id, actor=finance_actor, reason="Implant cancelled"
    )

    assert result.refund is None
    assert result.approval.amount == big.amount
    big.refresh_from_db()
    assert big.status == DepositStatus.PAID


# --- override ----------------------------------------------------------------------------


def test_finance_staff_override_a_settlement_with_a_reason_and_a_new_signal(
    paid_deposit, finance_actor
):
    deposits.deposit_record_attendance(
        actor=AM, practice=paid_deposit.practice, appointment_id="APT-9", outcome="no_show"
    )

    deposits.deposit_override(
        deposit_id=paid_deposit.id,
        actor=finance_actor,
        status=DepositStatus.CONVERTED,
        reason="Patient was delayed by a documented emergency",
    )

    paid_deposit.refresh_from_db()
    assert paid_deposit.status == DepositStatus.CONVERTED
    override = _last_audit(EventType.OVERRIDE_APPLIED)
    assert (override.from_state, override.to_state) == ("forfeited", "converted")
    assert override.actor_id == finance_actor.id
    assert override.payload["reason"] == "Patient was delayed by a documented emergency"
    signals = OutboxMessage.objects.filter(event_type__startswith="deposit.").order_by("created_at")
    assert [(m.event_type, m.payload["override"]) for m in signals] == [
        ("deposit.forfeited", False),
        ("deposit.converted", True),
    ]


def test_an_override_can_settle_a_paid_deposit_nobody_reported(paid_deposit, finance_actor):
    deposits.deposit_override(
        deposit_id=paid_deposit.id,
        actor=finance_actor,
        status="forfeited",
        reason="No-show, AM down",
    )

    assert OutboxMessage.objects.filter(event_type="deposit.forfeited").count() == 1


@pytest.mark.parametrize("status", ["paid", "waived", "refunded", "requested"])
def test_an_override_only_settles(paid_deposit, finance_actor, status):
    with pytest.raises(PaymentError) as refused:
        deposits.deposit_override(
            deposit_id=paid_deposit.id, actor=finance_actor, status=status, reason="x"
        )

    assert refused.value.field == "status"


def test_an_unpaid_deposit_cannot_be_overridden(deposit, finance_actor):
    with pytest.raises(InvalidTransition):
        deposits.deposit_override(
            deposit_id=deposit.id, actor=finance_actor, status="converted", reason="x"
        )


def test_reception_cannot_override(paid_deposit, reception_actor):
    with pytest.raises(NotPermitted):
        deposits.deposit_override(
            deposit_id=paid_deposit.id, actor=reception_actor, status="converted", reason="x"
        )

    assert not AuditEvent.objects.filter(event_type=EventType.OVERRIDE_APPLIED).exists()


# --- visibility -----------------------------------------------------------------------------


def test_staff_see_the_deposits_of_their_practice_only(deposit, reception_staff, other_practice):
    outsider = make_staff(Role.RECEPTION, practice=other_practice)

    assert list(deposits.deposits_visible_to(reception_staff)) == [deposit]
    assert list(deposits.deposits_visible_to(outsider)) == []
