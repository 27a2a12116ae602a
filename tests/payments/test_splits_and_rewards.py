"""Split tenders (§4.4) and rewards credit at checkout (§4.5, §13.2.9)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import flows, services
from payments.errors import InvalidTransition, PaymentError
from payments.models import Payment, PaymentMethod, PaymentState, SplitPayment, TargetType
from payments.services import RewardsCredit, TenderSpec
from tests.payments.helpers import new_payment

S = PaymentState


@pytest.fixture
def make_split(practice, site, patient, terminal, reception_actor):
    def make(*tenders, amount_due="100.00"):
        return services.split_create(
            actor=reception_actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.INVOICE,
            target_id="INV-SPLIT",
            amount_due=amount_due,
            tenders=list(tenders),
        )

    return make


def _tenders(split):
    return {p.method: p for p in Payment.objects.filter(split=split).exclude(state=S.FAILED)}


def test_split_settles_once_when_every_tender_is_captured(
    make_split, terminal, reception_actor, provider_actor
):
    split = make_split(
        TenderSpec(PaymentMethod.TERMINAL, Decimal("60.00"), terminal),
        TenderSpec(PaymentMethod.CASH, Decimal("25.00")),
        TenderSpec(PaymentMethod.VOUCHER, Decimal("15.00")),
    )
    tenders = _tenders(split)
    assert {t.state for t in tenders.values()} == {S.INITIATED}  # three ledger entries
    services.tender_record_received(payment_id=tenders["cash"].id, actor=reception_actor)
    services.tender_record_received(payment_id=tenders["voucher"].id, actor=reception_actor)
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.OPEN
    assert services.split_remaining(split) == Decimal("60.00")
    assert not OutboxMessage.objects.filter(destination=Destination.PMS).exists()

    services.payment_capture(payment_id=tenders["terminal"].id, actor=provider_actor)
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.SETTLED and services.split_remaining(split) == 0
    writeback = OutboxMessage.objects.get(destination=Destination.PMS)
    assert writeback.event_type == "split.settled"
    assert sorted(t["method"] for t in writeback.payload["tenders"]) == [
        "cash",
        "terminal",
        "voucher",
    ]
    assert (
        OutboxMessage.objects.filter(
            destination=Destination.FINANCIAL_INSIGHTS, event_type="payment.captured"
        ).count()
        == 3
    )
    assert (
        AuditEvent.objects.filter(
            event_type=EventType.SPLIT_SETTLED, subject_id=str(split.id)
        ).count()
        == 1
    )


@pytest.mark.parametrize(
    ("amounts", "code"),
    [(("50.00", "49.99"), "split_underpaid"), (("50.00", "50.01"), "split_overpaid")],
)
def test_under_and_over_payment_are_refused(make_split, amounts, code):
    with pytest.raises(PaymentError) as error:
        make_split(
            TenderSpec(PaymentMethod.CASH, Decimal(amounts[0])),
            TenderSpec(PaymentMethod.VOUCHER, Decimal(amounts[1])),
        )
    assert error.value.code == code and error.value.field == "tenders"
    assert not SplitPayment.objects.exists() and not Payment.objects.exists()


def test_failed_card_tender_leaves_the_others_and_the_split_open(
    make_split, terminal, reception_actor, provider_actor
):
    split = make_split(
        TenderSpec(PaymentMethod.TERMINAL, Decimal("70.00"), terminal),
        TenderSpec(PaymentMethod.CASH, Decimal("30.00")),
    )
    tenders = _tenders(split)
    services.tender_record_received(payment_id=tenders["cash"].id, actor=reception_actor)
    services.payment_fail(
        payment_id=tenders["terminal"].id, actor=provider_actor, code="declined", reason="Declined"
    )
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.OPEN
    assert Payment.objects.get(pk=tenders["cash"].id).state == S.CAPTURED
    assert services.split_remaining(split) == Decimal("70.00")

    retry = services.payment_retry(payment_id=tenders["terminal"].id, actor=reception_actor)
    assert retry.split_id == split.id and retry.amount == Decimal("70.00")
    services.payment_capture(payment_id=retry.id, actor=provider_actor)
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.SETTLED


def test_split_needs_two_tenders(make_split):
    with pytest.raises(PaymentError) as error:
        make_split(TenderSpec(PaymentMethod.CASH, Decimal("100.00")))
    assert error.value.code == "split_needs_tenders"


def test_card_tenders_cannot_be_recorded_as_received(make_split, terminal, reception_actor):
    split = make_split(
        TenderSpec(PaymentMethod.TERMINAL, Decimal("50.00"), terminal),
        TenderSpec(PaymentMethod.CASH, Decimal("50.00")),
    )
    with pytest.raises(PaymentError):
        services.tender_record_received(
            payment_id=_tenders(split)["terminal"].id, actor=reception_actor
        )


def test_a_voided_tender_can_be_replaced_and_the_split_then_settles(
    make_split, terminal, reception_actor, manager_actor, provider_actor
):
    split = make_split(
        TenderSpec(PaymentMethod.TERMINAL, Decimal("60.00"), terminal),
        TenderSpec(PaymentMethod.CASH, Decimal("40.00")),
    )
    tenders = _tenders(split)
    services.tender_record_received(payment_id=tenders["cash"].id, actor=reception_actor)
    services.payment_void(
        payment_id=tenders["terminal"].id, actor=manager_actor, reason_code="patient_request"
    )
    assert services.split_uncovered(split) == Decimal("60.00")

    with pytest.raises(PaymentError) as error:
        services.split_add_tender(
            split_id=split.id, actor=reception_actor, method="voucher", amount="60.01"
        )
    assert (error.value.code, error.value.field) == ("split_overpaid", "amount")
    voucher = services.split_add_tender(
        split_id=split.id, actor=reception_actor, method=PaymentMethod.VOUCHER, amount="60.00"
    )
    assert (voucher.split_id, voucher.target_id, voucher.state) == (
        split.id,
        "INV-SPLIT",
        S.INITIATED,
    )
    assert services.split_uncovered(split) == 0
    services.tender_record_received(payment_id=voucher.id, actor=reception_actor)

    split.refresh_from_db()
    assert split.status == SplitPayment.Status.SETTLED
    added = AuditEvent.objects.get(event_type=EventType.SPLIT_TENDER_ADDED)
    assert (added.subject_id, added.payment_id, added.amount) == (
        str(split.id),
        voucher.id,
        Decimal("60.00"),
    )


def test_a_failed_tender_replaced_by_a_new_one_cannot_also_be_retried(
    make_split, terminal, reception_actor, provider_actor
):
    split = make_split(
        TenderSpec(PaymentMethod.TERMINAL, Decimal("70.00"), terminal),
        TenderSpec(PaymentMethod.CASH, Decimal("30.00")),
    )
    card = _tenders(split)["terminal"]
    services.payment_fail(payment_id=card.id, actor=provider_actor, code="declined", reason="No")
    services.split_add_tender(split_id=split.id, actor=reception_actor, method="cash", amount="70")

    with pytest.raises(PaymentError) as error:
        services.payment_retry(payment_id=card.id, actor=reception_actor)

    assert error.value.code == "already_retried"
    assert Payment.objects.filter(split=split).count() == 3


def test_cancelling_a_split_voids_open_tenders_and_refunds_captured_ones(
    make_split, terminal, reception_actor, manager_actor, provider_actor
):
    split = make_split(
        TenderSpec(PaymentMethod.TERMINAL, Decimal("60.00"), terminal),
        TenderSpec(PaymentMethod.CASH, Decimal("25.00")),
        TenderSpec(PaymentMethod.VOUCHER, Decimal("15.00")),
    )
    tenders = _tenders(split)
    services.tender_record_received(payment_id=tenders["cash"].id, actor=reception_actor)
    services.payment_fail(
        payment_id=tenders["voucher"].id, actor=provider_actor, code="x", reason="Bad voucher"
    )

    result = services.split_cancel(
        split_id=split.id, actor=manager_actor, reason_code="patient_request", notes="Changed mind"
    )

    split.refresh_from_db()
    assert split.status == SplitPayment.Status.CANCELLED
    states = {t.method: t.state for t in Payment.objects.filter(split=split)}
    assert states == {"terminal": S.VOIDED, "cash": S.REFUNDED, "voucher": S.FAILED}
    assert [p.id for p in result.voided] == [tenders["terminal"].id]
    (refund,) = [r.refund for r in result.refunds]
    assert (refund.payment_id, refund.amount, refund.reason_code) == (
        tenders["cash"].id,
        Decimal("25.00"),
        "patient_request",
    )
    audit = AuditEvent.objects.get(event_type=EventType.SPLIT_CANCELLED)
    assert (audit.subject_id, audit.reason_code, audit.payload["notes"]) == (
        str(split.id),
        "patient_request",
        "Changed mind",
    )
    assert audit.payload["voided"] == [str(tenders["terminal"].id)]
    # Nothing more happens on a cancelled split.
    with pytest.raises(InvalidTransition):
        services.split_add_tender(split_id=split.id, actor=reception_actor, method="cash", amount=1)
    with pytest.raises(InvalidTransition):
        services.split_cancel(split_id=split.id, actor=manager_actor, reason_code="other")
    assert not OutboxMessage.objects.filter(event_type="split.settled").exists()


def test_cancelling_a_split_needs_the_void_role_and_a_reason(
    make_split, terminal, reception_actor, manager_actor
):
    from practices.access import NotPermitted

    split = make_split(
        TenderSpec(PaymentMethod.CASH, Decimal("50.00")),
        TenderSpec(PaymentMethod.VOUCHER, Decimal("50.00")),
    )
    with pytest.raises(NotPermitted):
        services.split_cancel(split_id=split.id, actor=reception_actor, reason_code="other")
    with pytest.raises(PaymentError) as error:
        services.split_cancel(split_id=split.id, actor=manager_actor, reason_code="")
    assert error.value.code == "invalid_reason_code"
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.OPEN
    assert not Payment.objects.filter(split=split, state=S.VOIDED).exists()


def test_a_settled_split_is_not_cancelled(make_split, reception_actor, manager_actor):
    split = make_split(
        TenderSpec(PaymentMethod.CASH, Decimal("50.00")),
        TenderSpec(PaymentMethod.VOUCHER, Decimal("50.00")),
    )
    for tender in Payment.objects.filter(split=split):
        services.tender_record_received(payment_id=tender.id, actor=reception_actor)

    with pytest.raises(InvalidTransition, match="settled"):
        services.split_cancel(split_id=split.id, actor=manager_actor, reason_code="other")


# --- Rewards credit -------------------------------------------------------------


def test_credit_reduces_the_charge_and_redeems_on_capture_only(
    practice, site, patient, terminal, reception_actor, provider_actor
):
    payment = new_payment(
        reception_actor,
        practice,
        site,
        patient,
        terminal=terminal,
        amount="100.00",
        rewards_credit=RewardsCredit(Decimal("20.00"), "RW-123"),
    )
    assert payment.charge_amount == Decimal("80.00")
    applied = AuditEvent.objects.get(event_type=EventType.REWARDS_CREDIT_APPLIED)
    assert (
        applied.amount == Decimal("20.00") and applied.payload["redemption_reference"] == "RW-123"
    )
    assert not OutboxMessage.objects.filter(destination=Destination.REWARDS_MANAGER).exists()

    services.payment_capture(payment_id=payment.id, actor=provider_actor, amount="80.00")
    payment.refresh_from_db()
    assert payment.captured_amount == Decimal("80.00")
    redemption = OutboxMessage.objects.get(destination=Destination.REWARDS_MANAGER)
    assert (
        redemption.payload["redemption_reference"] == "RW-123"
        and redemption.payload["amount"] == "20.00"
    )
    receipt = OutboxMessage.objects.get(destination=Destination.COMMUNICATION_HUB)
    assert receipt.payload["rewards_credit"] == {"amount": "20.00", "reference": "RW-123"}
    assert receipt.payload["charged_amount"] == "80.00"


def test_no_redemption_when_the_payment_fails(
    practice, site, patient, terminal, reception_actor, provider_actor
):
    payment = new_payment(
        reception_actor,
        practice,
        site,
        patient,
        terminal=terminal,
        rewards_credit=RewardsCredit(Decimal("5.00"), "RW-9"),
    )
    services.payment_fail(
        payment_id=payment.id, actor=provider_actor, code="declined", reason="Declined"
    )
    assert not OutboxMessage.objects.filter(destination=Destination.REWARDS_MANAGER).exists()


@pytest.mark.parametrize(
    ("amount", "reference"),
    [("100.00", "RW-1"), ("150.00", "RW-1"), ("10.00", ""), ("-1", "RW-1")],
)
def test_bad_credit_is_refused(
    practice, site, patient, terminal, reception_actor, amount, reference
):
    with pytest.raises(PaymentError):
        new_payment(
            reception_actor,
            practice,
            site,
            patient,
            terminal=terminal,
            rewards_credit=RewardsCredit(amount, reference),
        )
    assert not Payment.objects.exists()


def test_credit_applied_later_only_before_the_charge_is_sent(
    practice, site, patient, terminal, reception_actor, provider_actor
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    services.payment_apply_rewards_credit(
        payment_id=payment.id, actor=reception_actor, amount="10.00", reference="RW-2"
    )
    with pytest.raises(PaymentError):
        services.payment_apply_rewards_credit(
            payment_id=payment.id, actor=reception_actor, amount="5.00", reference="RW-3"
        )
    services.payment_await_customer(payment_id=payment.id, actor=provider_actor)
    other = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    services.payment_await_customer(payment_id=other.id, actor=provider_actor)
    with pytest.raises(InvalidTransition):
        services.payment_apply_rewards_credit(
            payment_id=other.id, actor=reception_actor, amount="5.00", reference="RW-4"
        )


def test_credit_refused_once_the_terminal_sale_is_on_its_way(
    settings, practice, site, patient, terminal, reception_actor
):
    """terminal_payment_start records the sale while the payment is still initiated."""
    settings.DNA_OPERATIONS_ON_COMMIT = False  # the worker has not sent it yet
    payment = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-RW",
        amount="100.00",
        terminal=terminal,
    )
    assert payment.state == S.INITIATED and payment.operations.count() == 1

    with pytest.raises(InvalidTransition) as refused:
        services.payment_apply_rewards_credit(
            payment_id=payment.id, actor=reception_actor, amount="10.00", reference="RW-LATE"
        )

    assert (refused.value.status, refused.value.code) == (409, "charge_already_sent")
    payment.refresh_from_db()
    assert payment.rewards_credit_applied is None and payment.charge_amount == Decimal("100.00")
    assert not AuditEvent.objects.filter(event_type=EventType.REWARDS_CREDIT_APPLIED).exists()


def test_credit_refused_when_rewards_disabled(practice, site, patient, terminal, reception_actor):
    practice.rewards_enabled = False
    practice.save()
    with pytest.raises(PaymentError) as error:
        new_payment(
            reception_actor,
            practice,
            site,
            patient,
            terminal=terminal,
            rewards_credit=RewardsCredit(Decimal("1.00"), "RW"),
        )
    assert error.value.code == "rewards_disabled"
