"""Disputes reported by a provider, and the exception views the staff portal reads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import services
from payments.disputes import payment_flag_dispute
from payments.errors import PaymentError
from payments.models import PaymentState
from payments.selectors import payment_exceptions
from practices.access import NotPermitted
from practices.roles import Role
from tests.factories import make_staff
from tests.payments.helpers import captured, new_payment

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid(reception_actor, provider_actor, practice, site, patient, terminal):
    return captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)


def test_a_chargeback_flags_the_payment_audits_it_and_creates_a_task(paid, provider_actor):
    outcome = payment_flag_dispute(
        payment_id=paid.id,
        actor=provider_actor,
        reason="Chargeback: goods or services not provided",
        provider_reference="CB-123",
    )

    assert outcome.changed is True
    paid.refresh_from_db()
    assert paid.disputed is True
    assert paid.state == PaymentState.CAPTURED  # a condition, not a lifecycle state
    audit = AuditEvent.objects.get(event_type=EventType.PAYMENT_EXCEPTION_FLAGGED)
    assert (audit.actor_id, audit.payment_id) == ("dna", paid.id)
    assert audit.payload["dispute_reference"] == "CB-123"
    task = OutboxMessage.objects.get(destination=Destination.TASK_MANAGER, payment_id=paid.id)
    assert task.payload["task_type"] == "payment_disputed"
    assert task.payload["dispute_reference"] == "CB-123"


def test_a_repeated_dispute_report_changes_nothing(paid, provider_actor):
    payment_flag_dispute(payment_id=paid.id, actor=provider_actor, reason="Chargeback")

    again = payment_flag_dispute(payment_id=paid.id, actor=provider_actor, reason="Chargeback")

    assert again.changed is False
    assert AuditEvent.objects.filter(event_type=EventType.PAYMENT_EXCEPTION_FLAGGED).count() == 1
    assert OutboxMessage.objects.filter(event_type="task.create", payment_id=paid.id).count() == 1


def test_staff_flag_a_dispute_only_with_manage_exceptions(paid, reception_actor, finance_actor):
    with pytest.raises(NotPermitted):
        payment_flag_dispute(payment_id=paid.id, actor=reception_actor, reason="Patient disputes")

    assert payment_flag_dispute(
        payment_id=paid.id, actor=finance_actor, reason="Patient disputes"
    ).changed


def test_a_dispute_needs_a_reason(paid, provider_actor):
    with pytest.raises(PaymentError):
        payment_flag_dispute(payment_id=paid.id, actor=provider_actor, reason="")


def test_the_exception_views_list_failed_disputed_unreconciled_and_unwritten_payments(
    reception_actor, provider_actor, practice, site, patient, terminal, reception_staff
):
    failed = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    services.payment_fail(payment_id=failed.id, actor=provider_actor, code="declined", reason="No")
    disputed = captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    payment_flag_dispute(payment_id=disputed.id, actor=provider_actor, reason="Chargeback")
    open_payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    later = timezone.now() + timedelta(days=3)  # past the reconciliation grace

    rows = {p.id: p for p in payment_exceptions(reception_staff, now=later)}

    assert failed.id in rows and disputed.id in rows
    assert open_payment.id not in rows
    assert rows[failed.id].is_failed and not rows[failed.id].is_disputed
    assert rows[disputed.id].is_disputed
    # A captured payment is pending reconciliation and its PMS writeback is still due.
    assert rows[disputed.id].is_pending_reconciliation
    assert rows[disputed.id].is_pending_pms_writeback
    assert [p.id for p in payment_exceptions(reception_staff, kind="disputed")] == [disputed.id]
    assert [p.id for p in payment_exceptions(reception_staff, kind="failed")] == [failed.id]


def test_the_exception_views_are_tenant_scoped(paid, provider_actor, other_practice):
    payment_flag_dispute(payment_id=paid.id, actor=provider_actor, reason="Chargeback")
    outsider = make_staff(Role.FINANCE_ADMIN, practice=other_practice)

    assert list(payment_exceptions(outsider)) == []


def test_an_unknown_exception_kind_is_a_programming_error(reception_staff):
    with pytest.raises(ValueError):
        payment_exceptions(reception_staff, kind="bogus")


def test_a_provider_actor_is_what_the_dna_handler_passes(paid):
    assert payment_flag_dispute(
        payment_id=paid.id, actor=Actor.provider("dna"), reason="Retrieval request"
    ).changed
