"""Inventory & Compliance Manager: a matched supplier invoice paid, and confirmed back on capture (§6.4)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from integrations.inbound.models import Module
from integrations.models import Destination, OutboxMessage
from integrations.relay import relay_due
from integrations.signing import verify
from payments import services
from payments.models import (
    Payment,
    PaymentMethod,
    PaymentPurpose,
    PaymentState,
    SupplierPayment,
    TargetType,
)
from tests.contracts.conftest import post_event
from tests.integrations.conftest import SECRETS as OUTBOX_SECRETS
from tests.integrations.conftest import module_path

pytestmark = pytest.mark.django_db

INV = Module.INVENTORY_MANAGER


def matched(practice, site, **extra):
    return {
        "practice_id": str(practice.id),
        "site_id": str(site.id),
        "purchase_order_id": "PO-5501",
        "supplier_invoice_id": "SUP-INV-88",
        "supplier_name": "Dental Supplies Ltd",
        "amount": "312.40",
        "payment_profile_id": "dna-practice-card",
        **extra,
    }


def test_a_matched_invoice_becomes_a_procurement_payment_without_a_patient(client, practice, site):
    response = post_event(client, INV, "invoice_matched", matched(practice, site))

    assert response.status_code == 200
    payment = Payment.objects.get()
    assert payment.patient is None
    assert (payment.purpose, payment.method, payment.state) == (
        PaymentPurpose.PROCUREMENT,
        PaymentMethod.CARD_ON_FILE,
        PaymentState.INITIATED,
    )
    assert (payment.target_type, payment.target_id, payment.pms_invoice_ref) == (
        TargetType.INVOICE,
        "SUP-INV-88",
        "",
    )
    assert (payment.amount, payment.payment_profile_id) == (Decimal("312.40"), "dna-practice-card")
    supplier = SupplierPayment.objects.get()
    assert (supplier.payment, supplier.purchase_order_id) == (payment, "PO-5501")
    assert response.json() == {
        "payment_id": str(payment.id),
        "state": "initiated",
        "purchase_order_id": "PO-5501",
        "supplier_invoice_id": "SUP-INV-88",
        "amount": "312.40",
        "currency": "GBP",
    }


def test_capture_confirms_to_inventory_only_and_the_relay_delivers_it_signed(
    client, practice, site, provider_actor, relay_to_sink
):
    post_event(client, INV, "invoice_matched", matched(practice, site))
    payment = Payment.objects.get()

    services.payment_capture(payment_id=payment.id, actor=provider_actor)

    (message,) = OutboxMessage.objects.filter(payment_id=payment.id)
    assert (message.destination, message.event_type) == (
        Destination.INVENTORY,
        "supplier_payment.executed",
    )
    stats = relay_due()
    assert stats.delivered == 1
    (received,) = relay_to_sink.by_path(module_path(Destination.INVENTORY))
    verify(
        OUTBOX_SECRETS[Destination.INVENTORY],
        received.headers["x-primoro-signature"],
        received.body,
        event_id=received.event_id,
    )
    assert received.event_type == "supplier_payment.executed"
    payload = received.document["payload"]
    assert (payload["purchase_order_id"], payload["supplier_invoice_id"]) == (
        "PO-5501",
        "SUP-INV-88",
    )
    assert (payload["captured_amount"], payload["state"]) == ("312.40", "captured")
    assert received.document["practice_id"] == str(practice.id)


def test_a_failed_supplier_payment_tells_inventory_and_raises_a_task(
    client, practice, site, provider_actor
):
    post_event(client, INV, "invoice_matched", matched(practice, site))
    payment = Payment.objects.get()

    services.payment_fail(payment_id=payment.id, actor=provider_actor, code="declined", reason="No")

    kinds = {
        (m.destination, m.event_type) for m in OutboxMessage.objects.filter(payment_id=payment.id)
    }
    assert kinds == {
        (Destination.INVENTORY, "supplier_payment.failed"),
        (Destination.TASK_MANAGER, "task.create"),
    }


def test_an_invoice_with_a_live_payment_is_not_paid_twice_but_may_be_after_a_failure(
    client, practice, site, provider_actor
):
    post_event(client, INV, "invoice_matched", matched(practice, site))
    again = post_event(client, INV, "invoice_matched", matched(practice, site))
    assert again.status_code == 409
    first = Payment.objects.get()

    services.payment_fail(payment_id=first.id, actor=provider_actor, code="declined", reason="No")
    retry = post_event(client, INV, "invoice_matched", matched(practice, site))

    assert retry.status_code == 200
    assert Payment.objects.count() == 2


def test_a_failed_supplier_payment_is_not_retried_as_a_patient_payment(
    client, practice, site, provider_actor, reception_actor
):
    from payments.errors import PaymentError

    post_event(client, INV, "invoice_matched", matched(practice, site))
    payment = Payment.objects.get()
    services.payment_fail(payment_id=payment.id, actor=provider_actor, code="declined", reason="No")

    with pytest.raises(PaymentError):
        services.payment_retry(payment_id=payment.id, actor=reception_actor)


def test_the_database_refuses_a_patient_payment_without_a_patient(practice, site):
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(
            practice=practice,
            site=site,
            patient=None,
            target_type=TargetType.INVOICE,
            target_id="INV-1",
            method=PaymentMethod.CASH,
            amount=Decimal("10.00"),
            initiated_by_kind="staff",
            initiated_by_label="someone",
        )


def test_an_invalid_amount_names_the_field(client, practice, site):
    response = post_event(client, INV, "invoice_matched", matched(practice, site, amount="0"))

    assert (response.status_code, response.json()["field"]) == (400, "amount")
    assert not Payment.objects.exists()
