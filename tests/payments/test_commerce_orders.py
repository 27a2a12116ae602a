"""A commerce order is paid before it is invoiced; its PMS invoice reference is added later (§3.1)."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent, EventType
from payments import services
from payments.errors import InvalidTransition, PaymentError
from payments.models import Payment, TargetType
from practices.access import NotPermitted
from tests.payments.helpers import captured, new_payment

pytestmark = pytest.mark.django_db


def _order(actor, provider, practice, site, patient, terminal, order_id="SHOP-1"):
    return captured(
        actor,
        provider,
        practice,
        site,
        patient,
        terminal=terminal,
        target_type=TargetType.COMMERCE_ORDER,
        target_id=order_id,
    )


def test_the_reference_is_recorded_on_every_payment_of_the_order_and_audited(
    practice, site, patient, terminal, reception_actor, provider_actor
):
    failed = new_payment(
        reception_actor,
        practice,
        site,
        patient,
        terminal=terminal,
        target_type=TargetType.COMMERCE_ORDER,
        target_id="SHOP-1",
    )
    services.payment_fail(payment_id=failed.id, actor=provider_actor, code="d", reason="Declined")
    paid = _order(reception_actor, provider_actor, practice, site, patient, terminal)
    other = _order(reception_actor, provider_actor, practice, site, patient, terminal, "SHOP-2")
    assert paid.pms_invoice_ref == ""

    changed = services.payment_set_invoice_ref(
        payment_id=paid.id, actor=reception_actor, pms_invoice_ref=" INV-5120 "
    )

    assert {p.id for p in changed} == {failed.id, paid.id}
    refs = dict(Payment.objects.values_list("id", "pms_invoice_ref"))
    assert refs == {failed.id: "INV-5120", paid.id: "INV-5120", other.id: ""}
    audits = AuditEvent.objects.filter(event_type=EventType.PAYMENT_INVOICE_REF_SET)
    assert {(a.payment_id, a.payload["pms_invoice_ref"]) for a in audits} == {
        (failed.id, "INV-5120"),
        (paid.id, "INV-5120"),
    }
    # The same reference again changes nothing; another one is refused.
    assert (
        services.payment_set_invoice_ref(
            payment_id=paid.id, actor=reception_actor, pms_invoice_ref="INV-5120"
        )
        == []
    )
    with pytest.raises(InvalidTransition, match="INV-5120"):
        services.payment_set_invoice_ref(
            payment_id=paid.id, actor=reception_actor, pms_invoice_ref="INV-0001"
        )
    assert audits.count() == 2


def test_only_commerce_orders_and_only_permitted_staff(
    practice, site, patient, terminal, reception_actor, provider_actor, approver_actor
):
    invoice = captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    order = _order(reception_actor, provider_actor, practice, site, patient, terminal)

    with pytest.raises(PaymentError) as error:
        services.payment_set_invoice_ref(
            payment_id=invoice.id, actor=reception_actor, pms_invoice_ref="INV-2"
        )
    assert error.value.code == "invalid_target"
    with pytest.raises(PaymentError) as error:
        services.payment_set_invoice_ref(
            payment_id=order.id, actor=reception_actor, pms_invoice_ref=""
        )
    assert (error.value.code, error.value.field) == ("invalid_reference", "pms_invoice_ref")
    with pytest.raises(NotPermitted):  # the approver takes no payments
        services.payment_set_invoice_ref(
            payment_id=order.id, actor=approver_actor, pms_invoice_ref="INV-3"
        )
    order.refresh_from_db()
    assert order.pms_invoice_ref == ""
