"""Refunds (§4.4, §13.2.4), voids and the approval workflow (§9)."""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import services
from payments.errors import InvalidTransition, PaymentError
from payments.models import (
    ApprovalRequest,
    PaymentMethod,
    PaymentState,
    ProviderOperation,
    Refund,
    TargetType,
)
from practices.access import NotPermitted
from practices.roles import Role
from tests.factories import PracticeFactory, make_staff
from tests.payments.helpers import captured, new_payment

S = PaymentState


@pytest.fixture
def paid(practice, site, patient, terminal, reception_actor, provider_actor):
    return captured(
        reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="200.00"
    )


def test_partial_then_full_refund_by_the_original_method(paid, manager_actor, provider_actor):
    first = services.refund_request(
        payment_id=paid.id,
        actor=manager_actor,
        amount="50.00",
        reason_code="billing_error",
        notes="double charged hygiene",
    ).refund
    assert first.status == Refund.Status.PENDING
    assert (
        first.method == PaymentMethod.TERMINAL
        and first.original_provider_reference == paid.provider_reference
    )
    op = ProviderOperation.objects.get(operation="refund")
    assert op.idempotency_key == f"pay:{paid.id}:refund:{first.id}"
    paid.refresh_from_db()
    assert paid.state == S.CAPTURED  # nothing moves until the provider confirms

    services.refund_complete(refund_id=first.id, actor=provider_actor, provider_reference="rf-1")
    paid.refresh_from_db()
    assert paid.state == S.PARTIALLY_REFUNDED and paid.refunded_amount == Decimal("50.00")

    rest = services.refund_request(
        payment_id=paid.id, actor=manager_actor, reason_code="patient_request"
    ).refund
    assert rest.amount == Decimal("150.00")  # omitted amount = what is left
    services.refund_complete(refund_id=rest.id, actor=provider_actor)
    paid.refresh_from_db()
    assert paid.state == S.REFUNDED and paid.refunded_amount == Decimal("200.00")

    audit = AuditEvent.objects.filter(
        payment_id=paid.id,
        event_type__in=[EventType.PAYMENT_PARTIALLY_REFUNDED, EventType.PAYMENT_REFUNDED],
    ).order_by("seq")
    assert [(e.event_type, e.amount, e.reason_code) for e in audit] == [
        (EventType.PAYMENT_PARTIALLY_REFUNDED, Decimal("50.00"), "billing_error"),
        (EventType.PAYMENT_REFUNDED, Decimal("150.00"), "patient_request"),
    ]
    assert audit[0].payload["original_transaction"] == paid.provider_reference
    signals = OutboxMessage.objects.filter(destination=Destination.FINANCIAL_INSIGHTS).order_by(
        "created_at"
    )
    assert [m.event_type for m in signals] == [
        "payment.captured",
        "payment.partially_refunded",
        "payment.refunded",
    ]
    assert signals[1].payload["patient_id"] == str(paid.patient_id)
    assert signals[1].payload["billable_target"]["type"] == "invoice"


def test_repeated_refund_confirmation_changes_nothing(paid, manager_actor, provider_actor):
    refund = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="10.00", reason_code="other"
    ).refund
    services.refund_complete(refund_id=refund.id, actor=provider_actor)
    services.refund_complete(refund_id=refund.id, actor=provider_actor)
    paid.refresh_from_db()
    assert paid.refunded_amount == Decimal("10.00")
    assert (
        AuditEvent.objects.filter(
            payment_id=paid.id, event_type=EventType.PAYMENT_PARTIALLY_REFUNDED
        ).count()
        == 1
    )


def test_refund_never_exceeds_the_captured_total_including_pending(paid, manager_actor):
    services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="150.00", reason_code="other"
    )
    with pytest.raises(PaymentError) as error:
        services.refund_request(
            payment_id=paid.id, actor=manager_actor, amount="50.01", reason_code="other"
        )
    assert error.value.code == "refund_exceeds_captured" and error.value.field == "amount"


def test_failed_refund_releases_the_amount(paid, manager_actor, provider_actor):
    refund = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="200.00", reason_code="other"
    ).refund
    services.refund_fail(refund_id=refund.id, actor=provider_actor, reason="Provider refused")
    paid.refresh_from_db()
    assert paid.state == S.CAPTURED and paid.refunded_amount == 0
    assert AuditEvent.objects.filter(
        event_type=EventType.REFUND_FAILED, subject_id=str(refund.id)
    ).exists()
    again = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="200.00", reason_code="other"
    )
    assert again.refund.amount == Decimal("200.00")
    with pytest.raises(InvalidTransition):
        services.refund_complete(refund_id=refund.id, actor=provider_actor)


def test_a_failed_refund_raises_a_task_in_the_same_transaction(paid, manager_actor, provider_actor):
    refund = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="80.00", reason_code="billing_error"
    ).refund

    services.refund_fail(refund_id=refund.id, actor=provider_actor, reason="Card account closed")
    services.refund_fail(refund_id=refund.id, actor=provider_actor, reason="Card account closed")

    (task,) = OutboxMessage.objects.filter(
        destination=Destination.TASK_MANAGER, event_type="task.create"
    )
    assert task.payment_id == paid.id
    assert task.payload["task_type"] == "refund_failed"
    assert (task.payload["refund_id"], task.payload["refund_amount"]) == (str(refund.id), "80.00")
    assert task.payload["detail"] == "Card account closed"
    assert task.payload["reason_code"] == "billing_error"
    assert task.payload["payment"]["payment_id"] == str(paid.id)


def test_refund_needs_a_reason_and_a_captured_payment(
    practice, site, patient, terminal, reception_actor, manager_actor, paid
):
    with pytest.raises(PaymentError) as error:
        services.refund_request(
            payment_id=paid.id, actor=manager_actor, amount="1.00", reason_code="because"
        )
    assert error.value.code == "invalid_reason_code"
    pending = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    with pytest.raises(InvalidTransition):
        services.refund_request(
            payment_id=pending.id, actor=manager_actor, amount="1.00", reason_code="other"
        )


def test_cash_refund_completes_at_once(practice, site, patient, reception_actor, manager_actor):
    cash = new_payment(
        reception_actor, practice, site, patient, method=PaymentMethod.CASH, amount="30.00"
    )
    services.tender_record_received(payment_id=cash.id, actor=reception_actor)
    refund = services.refund_request(
        payment_id=cash.id, actor=manager_actor, amount="30.00", reason_code="service_not_rendered"
    ).refund
    assert refund.status == Refund.Status.SUCCEEDED
    cash.refresh_from_db()
    assert cash.state == S.REFUNDED
    assert not ProviderOperation.objects.exists()


# --- Approvals -------------------------------------------------------------------


def test_refund_above_threshold_waits_for_a_second_person(
    paid, practice, manager_actor, refund_manager, approver_actor, approver, provider_actor
):
    practice.refund_approval_threshold = Decimal("100.00")
    practice.save()
    result = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="150.00", reason_code="billing_error"
    )
    assert result.refund is None
    approval = result.approval
    assert (
        approval.status == ApprovalRequest.Status.PENDING
        and approval.requested_by == refund_manager
    )
    assert not Refund.objects.exists()
    task = OutboxMessage.objects.get(destination=Destination.TASK_MANAGER)
    assert task.payload["task_type"] == "approval_required"
    assert AuditEvent.objects.filter(
        event_type=EventType.APPROVAL_REQUIRED, subject_id=str(approval.id)
    ).exists()

    refund = services.approval_grant(approval_id=approval.id, actor=approver_actor, note="checked")
    assert refund.approved_by == approver and refund.amount == Decimal("150.00")
    granted = AuditEvent.objects.get(event_type=EventType.APPROVAL_GRANTED)
    assert granted.approver_id == str(approver.pk)
    services.refund_complete(refund_id=refund.id, actor=provider_actor)
    refunded = AuditEvent.objects.get(event_type=EventType.PAYMENT_PARTIALLY_REFUNDED)
    assert refunded.approver_id == str(approver.pk) and refunded.actor_id == str(refund_manager.pk)


def test_the_threshold_counts_what_was_already_refunded_not_each_refund_alone(
    practice, site, patient, terminal, reception_actor, provider_actor, manager_actor
):
    """Four refunds of 250 cannot return 1,000 past a 250 threshold without an approver."""
    assert practice.refund_approval_threshold == Decimal("250.00")
    big = captured(
        reception_actor,
        provider_actor,
        practice,
        site,
        patient,
        terminal=terminal,
        amount="1000.00",
    )

    first = services.refund_request(
        payment_id=big.id, actor=manager_actor, amount="250.00", reason_code="other"
    )
    services.refund_complete(refund_id=first.refund.id, actor=provider_actor)
    second = services.refund_request(
        payment_id=big.id, actor=manager_actor, amount="250.00", reason_code="other"
    )
    small = services.refund_request(
        payment_id=big.id, actor=manager_actor, amount="0.01", reason_code="other"
    )

    assert first.refund is not None and first.approval is None
    assert second.refund is None and second.approval.amount == Decimal("250.00")
    # Waiting approvals count too: nothing more slips through beside them.
    assert small.refund is None and small.approval is not None
    assert Refund.objects.filter(payment=big).count() == 1


def test_pending_refunds_count_towards_the_threshold(paid, practice, manager_actor):
    practice.refund_approval_threshold = Decimal("100.00")
    practice.save()
    pending = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="60.00", reason_code="other"
    )

    second = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="60.00", reason_code="other"
    )

    assert pending.refund.status == Refund.Status.PENDING
    assert second.refund is None and second.approval is not None


def test_requester_can_never_approve_their_own_request(paid, practice):
    both = make_staff(Role.REFUND_MANAGER, Role.REFUND_APPROVER, practice=practice)
    actor = Actor.staff(both)
    practice.refund_approval_threshold = Decimal("50.00")
    practice.save()
    approval = services.refund_request(
        payment_id=paid.id, actor=actor, amount="100.00", reason_code="other"
    ).approval
    with pytest.raises(PaymentError) as error:
        services.approval_grant(approval_id=approval.id, actor=actor)
    assert error.value.code == "self_approval"
    with pytest.raises(PaymentError):
        services.approval_deny(approval_id=approval.id, actor=actor)


def test_only_an_approver_of_this_practice_approves(
    practice, site, patient, terminal, reception_actor, provider_actor, manager_actor
):
    big = captured(
        reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="900.00"
    )
    approval = services.refund_request(
        payment_id=big.id, actor=manager_actor, amount="300.00", reason_code="other"
    ).approval
    another_manager = Actor.staff(make_staff(Role.REFUND_MANAGER, practice=practice))
    elsewhere = Actor.staff(make_staff(Role.REFUND_APPROVER, practice=PracticeFactory()))
    for actor in (another_manager, reception_actor, elsewhere):
        with pytest.raises(NotPermitted):
            services.approval_grant(approval_id=approval.id, actor=actor)
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING


def test_denied_or_expired_requests_change_no_money(paid, practice, manager_actor, approver_actor):
    practice.refund_approval_threshold = Decimal("10.00")
    practice.save()
    denied = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="20.00", reason_code="other"
    ).approval
    services.approval_deny(approval_id=denied.id, actor=approver_actor, note="not justified")
    expiring = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="30.00", reason_code="other"
    ).approval
    assert services.approvals_expire(now=timezone.now() + timedelta(hours=73)) == 1
    with pytest.raises(InvalidTransition):
        services.approval_grant(approval_id=expiring.id, actor=approver_actor)
    with pytest.raises(InvalidTransition):
        services.approval_grant(approval_id=denied.id, actor=approver_actor)
    paid.refresh_from_db()
    assert paid.state == S.CAPTURED and paid.refunded_amount == 0
    assert not Refund.objects.exists()
    types = set(AuditEvent.objects.values_list("event_type", flat=True))
    assert {EventType.APPROVAL_DENIED, EventType.APPROVAL_EXPIRED} <= types


def test_a_request_past_its_time_is_refused_before_beat_marks_it_expired(
    paid, practice, manager_actor, approver_actor
):
    practice.refund_approval_threshold = Decimal("10.00")
    practice.save()
    approval = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="30.00", reason_code="other"
    ).approval
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    with pytest.raises(InvalidTransition, match="has expired"):
        services.approval_grant(approval_id=approval.id, actor=approver_actor)
    with pytest.raises(InvalidTransition, match="has expired"):
        services.approval_deny(approval_id=approval.id, actor=approver_actor, note="late")

    approval.refresh_from_db()
    paid.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.PENDING  # still for beat to mark
    assert approval.decided_by is None and approval.refund is None
    assert paid.state == S.CAPTURED and paid.refunded_amount == 0
    assert not Refund.objects.exists()
    assert not ProviderOperation.objects.filter(operation="refund").exists()
    assert not AuditEvent.objects.filter(
        event_type__in=[EventType.APPROVAL_GRANTED, EventType.APPROVAL_DENIED]
    ).exists()
    assert services.approvals_expire() == 1
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.EXPIRED


# Tests taking `other_site` name it before `paid`: staff see the sites that exist when
# their access is first read.
def _cash_refund(site, patient, reception_actor, manager_actor, target_id="INV-CASH") -> Refund:
    cash = services.offline_payment_record(
        actor=reception_actor,
        practice=site.practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=target_id,
        amount="40.00",
        method=PaymentMethod.CASH,
    )
    return services.refund_request(
        payment_id=cash.id, actor=manager_actor, amount="15.00", reason_code="other"
    ).refund


def test_a_refund_carries_its_payments_site_by_every_path(
    other_site, paid, practice, patient, reception_actor, manager_actor, approver_actor
):
    at_the_desk = _cash_refund(other_site, patient, reception_actor, manager_actor)
    by_card = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="20.00", reason_code="other"
    ).refund
    practice.refund_approval_threshold = Decimal("10.00")
    practice.save()
    approval = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="30.00", reason_code="other"
    ).approval
    approved = services.approval_grant(approval_id=approval.id, actor=approver_actor)

    assert paid.site_id != other_site.id
    assert {r.pk: r.site_id for r in Refund.objects.all()} == {
        at_the_desk.pk: other_site.id,
        by_card.pk: paid.site_id,
        approved.pk: paid.site_id,
    }


def test_the_backfill_gives_older_refunds_their_payments_site(
    other_site, paid, patient, reception_actor, manager_actor
):
    refunds = [
        services.refund_request(
            payment_id=paid.id, actor=manager_actor, amount="20.00", reason_code="other"
        ).refund,
        _cash_refund(other_site, patient, reception_actor, manager_actor),
    ]
    Refund.objects.update(site=None)  # as rows written before the column existed
    backfill = importlib.import_module("payments.migrations.0010_refund_site_backfill")

    backfill.fill_sites(apps, schema_editor=None)

    assert [Refund.objects.get(pk=r.pk).site_id for r in refunds] == [
        paid.site_id,
        other_site.id,
    ]


def test_the_refund_admin_shows_a_site_limited_user_only_their_sites(
    client, practice, site, other_site, patient, reception_actor, manager_actor
):
    here = _cash_refund(site, patient, reception_actor, manager_actor, target_id="INV-HERE")
    _cash_refund(other_site, patient, reception_actor, manager_actor, target_id="INV-THERE")
    client.force_login(
        make_staff(Role.REFUND_MANAGER, practice=practice, sites=[site], is_staff=True)
    )

    response = client.get(reverse("admin:payments_refund_changelist"))

    assert response.status_code == 200
    assert [r.pk for r in response.context["cl"].result_list] == [here.pk]


def test_reconciliation_waits_for_a_pending_refund(paid, manager_actor, provider_actor):
    refund = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="20.00", reason_code="other"
    ).refund
    with pytest.raises(InvalidTransition):
        services.payment_reconcile(payment_id=paid.id, actor=provider_actor, batch_reference="B-1")
    services.refund_complete(refund_id=refund.id, actor=provider_actor)
    outcome = services.payment_reconcile(
        payment_id=paid.id, actor=provider_actor, batch_reference="B-1"
    )
    assert outcome.payment.state == S.RECONCILED and outcome.payment.refunded_amount == Decimal(
        "20.00"
    )


def test_a_settled_payment_can_still_be_refunded_and_is_reconciled_again(
    paid, manager_actor, provider_actor
):
    services.payment_reconcile(payment_id=paid.id, actor=provider_actor, batch_reference="B-1")
    refund = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="50.00", reason_code="patient_request"
    ).refund
    services.refund_complete(refund_id=refund.id, actor=provider_actor)
    paid.refresh_from_db()
    assert paid.state == S.PARTIALLY_REFUNDED and paid.refunded_amount == Decimal("50.00")
    again = services.payment_reconcile(
        payment_id=paid.id, actor=provider_actor, batch_reference="B-2"
    )
    assert again.changed and again.payment.state == S.RECONCILED


def test_the_refund_admin_list_costs_the_same_queries_for_more_refunds(
    client, practice, site, other_site, patient, reception_actor, manager_actor
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(make_staff(Role.REFUND_MANAGER, practice=practice, is_staff=True))
    url = reverse("admin:payments_refund_changelist")
    _cash_refund(site, patient, reception_actor, manager_actor, target_id="INV-Q1")
    with CaptureQueriesContext(connection) as one:
        assert client.get(url).status_code == 200
    for n, where in enumerate([site, other_site, other_site]):
        _cash_refund(where, patient, reception_actor, manager_actor, target_id=f"INV-Q{n + 2}")
    with CaptureQueriesContext(connection) as four:
        response = client.get(url)

    assert len(response.context["cl"].result_list) == 4
    assert len(four) == len(one)  # practice, site and payment come with each row
