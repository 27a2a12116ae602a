"""§3.2 lifecycle rules and §13.2 items 1–5: each would fail if the rule were broken."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import services
from payments.errors import InvalidTransition, PaymentError
from payments.models import Payment, PaymentMethod, PaymentState, TargetType
from practices.models import PatientKind
from tests.factories import PatientFactory
from tests.payments.helpers import captured, new_payment

S = PaymentState


@pytest.fixture
def pay(practice, site, patient, terminal, reception_actor):
    return new_payment(reception_actor, practice, site, patient, terminal=terminal)


def _events(payment):
    return list(
        AuditEvent.objects.filter(payment_id=payment.id)
        .order_by("seq")
        .values_list("event_type", "from_state", "to_state")
    )


def test_create_moves_proposed_to_initiated_with_an_audit_event(pay, reception):
    assert pay.state == S.INITIATED
    assert pay.initiated_by_user == reception and pay.initiated_by_kind == "staff"
    assert _events(pay) == [(EventType.PAYMENT_INITIATED, "proposed", "initiated")]
    event = AuditEvent.objects.get(payment_id=pay.id)
    assert (
        event.amount == Decimal("100.00")
        and event.method == "terminal"
        and event.target_type == "invoice"
    )
    assert event.site_id == pay.site_id and event.terminal_id == pay.terminal_id
    assert event.actor_kind == "staff" and event.actor_id == str(reception.pk)


def test_state_field_is_protected(pay):
    with pytest.raises(AttributeError):
        pay.state = S.CAPTURED


def test_terminal_flow_to_capture(pay, provider_actor):
    services.payment_await_customer(
        payment_id=pay.id, actor=provider_actor, provider_reference="uti-1"
    )
    services.payment_authorise(payment_id=pay.id, actor=provider_actor)
    outcome = services.payment_capture(payment_id=pay.id, actor=provider_actor)
    assert outcome.changed and outcome.payment.state == S.CAPTURED
    assert outcome.payment.captured_amount == Decimal("100.00")
    assert outcome.payment.provider_reference == "uti-1"
    assert [e[2] for e in _events(pay)] == [
        "initiated",
        "awaiting_customer_action",
        "authorised",
        "captured",
    ]


@pytest.mark.parametrize("back_to", ["initiate", "await_customer"])
def test_nothing_returns_to_initiated_or_earlier_after_authorisation(pay, provider_actor, back_to):
    services.payment_authorise(payment_id=pay.id, actor=provider_actor)
    pay.refresh_from_db()
    from django_fsm import TransitionNotAllowed

    with pytest.raises(TransitionNotAllowed):
        getattr(pay, back_to)()
    services.payment_await_customer(
        payment_id=pay.id, actor=provider_actor
    )  # a late "awaiting" is ignored
    pay.refresh_from_db()
    assert pay.state == S.AUTHORISED


def test_second_capture_is_a_no_op(pay, provider_actor):
    first = services.payment_capture(payment_id=pay.id, actor=provider_actor)
    second = services.payment_capture(payment_id=pay.id, actor=provider_actor)
    assert first.changed and not second.changed
    assert AuditEvent.objects.filter(payment_id=pay.id, to_state="captured").count() == 1
    assert (
        OutboxMessage.objects.filter(payment_id=pay.id, event_type="payment.captured").count() == 2
    )  # FI + PMS


def test_capture_of_a_different_amount_is_refused(pay, provider_actor):
    with pytest.raises(PaymentError) as error:
        services.payment_capture(payment_id=pay.id, actor=provider_actor, amount="99.99")
    assert error.value.code == "capture_amount_mismatch"
    pay.refresh_from_db()
    assert pay.state == S.INITIATED


def test_only_captured_is_paid_and_only_paid_goes_to_the_pms(pay, provider_actor):
    services.payment_await_customer(payment_id=pay.id, actor=provider_actor)
    assert not OutboxMessage.objects.filter(destination=Destination.PMS).exists()
    services.payment_capture(payment_id=pay.id, actor=provider_actor)
    pay.refresh_from_db()
    assert pay.is_paid
    assert OutboxMessage.objects.get(destination=Destination.PMS).event_type == "payment.captured"


def test_failed_payment_creates_a_task_and_no_writeback(pay, provider_actor):
    services.payment_fail(
        payment_id=pay.id, actor=provider_actor, code="declined", reason="Card declined"
    )
    pay.refresh_from_db()
    assert pay.state == S.FAILED and pay.failure_reason == "Card declined"
    task = OutboxMessage.objects.get(destination=Destination.TASK_MANAGER)
    assert task.payload["task_type"] == "payment_failed"
    assert not OutboxMessage.objects.filter(destination=Destination.PMS).exists()


def test_timeout_fails_with_a_retry_path_keeping_history(pay, provider_actor, reception_actor):
    services.payment_fail(
        payment_id=pay.id,
        actor=provider_actor,
        code="provider_timeout",
        reason="No answer from the terminal",
    )
    retry = services.payment_retry(payment_id=pay.id, actor=reception_actor)
    assert retry.retry_of_id == pay.id
    assert (retry.target_type, retry.target_id, retry.amount) == (
        pay.target_type,
        pay.target_id,
        pay.amount,
    )
    assert retry.state == S.INITIATED
    pay.refresh_from_db()
    assert pay.state == S.FAILED
    assert [e[2] for e in _events(pay)] == ["initiated", "failed"]
    with pytest.raises(PaymentError):
        services.payment_retry(payment_id=pay.id, actor=reception_actor)


def test_only_failed_payments_can_be_retried(pay, reception_actor):
    with pytest.raises(InvalidTransition):
        services.payment_retry(payment_id=pay.id, actor=reception_actor)


def test_captured_payment_cannot_fail(pay, provider_actor):
    services.payment_capture(payment_id=pay.id, actor=provider_actor)
    with pytest.raises(InvalidTransition):
        services.payment_fail(
            payment_id=pay.id, actor=provider_actor, code="x", reason="late decline"
        )


def test_void_only_before_capture(
    pay, provider_actor, manager_actor, practice, site, patient, terminal, reception_actor
):
    outcome = services.payment_void(
        payment_id=pay.id, actor=manager_actor, reason_code="patient_request"
    )
    assert outcome.payment.state == S.VOIDED
    assert _events(pay)[-1] == (EventType.PAYMENT_VOIDED, "initiated", "voided")
    assert AuditEvent.objects.filter(payment_id=pay.id).last().reason_code == "patient_request"
    paid = captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    with pytest.raises(InvalidTransition):
        services.payment_void(payment_id=paid.id, actor=manager_actor, reason_code="other")


def test_void_needs_a_reason_code(pay, manager_actor):
    with pytest.raises(PaymentError) as error:
        services.payment_void(payment_id=pay.id, actor=manager_actor, reason_code="")
    assert error.value.code == "invalid_reason_code"


def test_reconcile_only_from_captured_or_refund_states(
    pay, provider_actor, practice, site, patient, terminal, reception_actor
):
    with pytest.raises(InvalidTransition):
        services.payment_reconcile(payment_id=pay.id, actor=provider_actor, batch_reference="B1")
    paid = captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    outcome = services.payment_reconcile(
        payment_id=paid.id, actor=provider_actor, batch_reference="B1"
    )
    assert outcome.payment.state == S.RECONCILED and outcome.payment.reconciled_at is not None


def test_payment_needs_a_valid_target(practice, site, patient, reception_actor):
    with pytest.raises(PaymentError) as error:
        new_payment(
            reception_actor, practice, site, patient, method=PaymentMethod.CASH, target_type="gift"
        )
    assert error.value.code == "invalid_target"
    with pytest.raises(PaymentError) as error:
        new_payment(
            reception_actor, practice, site, patient, method=PaymentMethod.CASH, target_id=""
        )
    assert error.value.field == "target_id"
    assert not Payment.objects.exists()


def test_commerce_order_needs_no_pms_invoice_reference(practice, site, patient, reception_actor):
    payment = new_payment(
        reception_actor,
        practice,
        site,
        patient,
        method=PaymentMethod.PAY_BY_LINK,
        target_type=TargetType.COMMERCE_ORDER,
        target_id="ORDER-77",
    )
    assert payment.pms_invoice_ref == ""
    invoice = new_payment(
        reception_actor,
        practice,
        site,
        patient,
        method=PaymentMethod.PAY_BY_LINK,
        target_id="INV-55",
    )
    assert invoice.pms_invoice_ref == "INV-55"


def test_prospects_pay_only_where_permitted(practice, site, reception_actor):
    prospect = PatientFactory(practice=practice, kind=PatientKind.PROSPECT, pms_patient_id="")
    deposit = new_payment(
        reception_actor,
        practice,
        site,
        prospect,
        method=PaymentMethod.PAY_BY_LINK,
        target_type=TargetType.DEPOSIT,
        target_id="DEP-1",
    )
    assert deposit.patient == prospect
    with pytest.raises(PaymentError) as error:
        new_payment(
            reception_actor,
            practice,
            site,
            prospect,
            method=PaymentMethod.PAY_BY_LINK,
            target_type=TargetType.INVOICE,
        )
    assert error.value.code == "prospect_not_permitted"
    practice.prospect_payments_enabled = False
    practice.save()
    with pytest.raises(PaymentError):
        new_payment(
            reception_actor,
            practice,
            site,
            prospect,
            method=PaymentMethod.PAY_BY_LINK,
            target_type=TargetType.DEPOSIT,
            target_id="DEP-2",
        )


@pytest.mark.parametrize("amount", ["0", "-5", "10.001", "abc", 10.5, "NaN", "Infinity"])
def test_bad_amounts_are_refused_with_a_field_error(
    practice, site, patient, reception_actor, amount
):
    with pytest.raises(PaymentError) as error:
        new_payment(
            reception_actor, practice, site, patient, method=PaymentMethod.CASH, amount=amount
        )
    assert error.value.code == "invalid_amount" and error.value.field == "amount"


def test_terminal_must_belong_to_the_site(practice, site, other_site, patient, reception_actor):
    from tests.factories import TerminalFactory

    elsewhere = TerminalFactory(site=other_site, practice=practice)
    with pytest.raises(PaymentError) as error:
        new_payment(reception_actor, practice, site, patient, terminal=elsewhere)
    assert error.value.code == "invalid_terminal"
    with pytest.raises(PaymentError) as error:
        new_payment(reception_actor, practice, site, patient, terminal=None)
    assert error.value.code == "terminal_required"


def test_patient_self_serve_pays_only_their_own_and_online(practice, site, patient):
    from audit.actors import Actor
    from payments.errors import NotFound

    me = Actor.for_patient(patient)
    payment = new_payment(me, practice, site, patient, method=PaymentMethod.ONLINE)
    assert (
        payment.initiated_by_kind == "patient"
        and payment.initiated_by_label == "patient-self-serve"
    )
    with pytest.raises(NotFound):
        new_payment(
            me, practice, site, PatientFactory(practice=practice), method=PaymentMethod.ONLINE
        )
    with pytest.raises(PaymentError):
        new_payment(me, practice, site, patient, method=PaymentMethod.VIRTUAL_TERMINAL)


def test_virtual_terminal_is_moto_and_can_be_disabled(practice, site, patient):
    from audit.actors import Actor
    from practices.roles import Role
    from tests.factories import make_staff

    operator = Actor.staff(make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=practice))
    payment = new_payment(operator, practice, site, patient, method=PaymentMethod.VIRTUAL_TERMINAL)
    assert payment.moto
    practice.virtual_terminal_enabled = False
    practice.save()
    with pytest.raises(PaymentError) as error:
        new_payment(operator, practice, site, patient, method=PaymentMethod.VIRTUAL_TERMINAL)
    assert error.value.code == "virtual_terminal_disabled"


def test_system_trigger_card_on_file_needs_a_profile(practice, site, patient):
    from audit.actors import Actor

    trigger = Actor.system("smart_treatment_proposals")
    with pytest.raises(PaymentError):
        new_payment(trigger, practice, site, patient, method=PaymentMethod.CARD_ON_FILE)
    payment = new_payment(
        trigger,
        practice,
        site,
        patient,
        method=PaymentMethod.CARD_ON_FILE,
        payment_profile_id="prof-1",
    )
    assert (
        payment.initiated_by_kind == "system"
        and payment.initiated_by_label == "smart_treatment_proposals"
    )


def test_cash_is_recorded_and_captured_in_one_step_and_only_cash_or_vouchers(
    practice, site, patient, reception_actor
):
    common = dict(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-DESK",
        amount="12.00",
    )

    cash = services.offline_payment_record(method=PaymentMethod.CASH, **common)
    with pytest.raises(PaymentError) as refused:
        services.offline_payment_record(method=PaymentMethod.ONLINE, **common)

    assert (cash.state, cash.captured_amount) == (PaymentState.CAPTURED, Decimal("12.00"))
    assert refused.value.code == "method_not_allowed"
    assert list(Payment.objects.values_list("pk", flat=True)) == [cash.pk]
