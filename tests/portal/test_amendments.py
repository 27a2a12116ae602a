"""Cancelling an open split from its page; adding a fulfilled order's PMS invoice reference."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, SplitPayment, TargetType
from payments.services import TenderSpec
from tests.payments.helpers import new_payment

pytestmark = pytest.mark.django_db

S = PaymentState


@pytest.fixture
def split(practice, site, patient, reception_actor):
    split = services.split_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-7",
        amount_due="100.00",
        tenders=[
            TenderSpec(PaymentMethod.CASH, Decimal("40.00")),
            TenderSpec(PaymentMethod.VOUCHER, Decimal("60.00")),
        ],
    )
    cash = Payment.objects.get(split=split, method=PaymentMethod.CASH)
    services.tender_record_received(payment_id=cash.id, actor=reception_actor)
    return split


def test_a_refund_manager_cancels_an_open_split_from_its_page(client, split, refund_manager):
    client.force_login(refund_manager)
    url = f"/splits/{split.id}/"
    assert f'href="{url}cancel/"' in client.get(url).content.decode()

    no_reason = client.post(f"{url}cancel/", {"reason_code": ""})
    done = client.post(f"{url}cancel/", {"reason_code": "patient_request", "notes": "Changed"})

    assert no_reason.status_code == 400
    assert done.status_code == 302 and done["Location"] == url
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.CANCELLED
    states = dict(Payment.objects.filter(split=split).values_list("method", "state"))
    assert states == {"cash": S.REFUNDED, "voucher": S.VOIDED}
    page = client.get(url).content.decode()
    assert "Split cancelled: 1 tender(s) voided, 1 refund(s) started." in page
    assert f'href="{url}cancel/"' not in page
    assert client.get(f"{url}cancel/").status_code == 404


def test_reception_cannot_cancel_a_split(client, split, reception):
    client.force_login(reception)
    url = f"/splits/{split.id}/"

    assert f'href="{url}cancel/"' not in client.get(url).content.decode()
    assert client.post(f"{url}cancel/", {"reason_code": "other"}).status_code == 403
    split.refresh_from_db()
    assert split.status == SplitPayment.Status.OPEN


def test_staff_add_the_invoice_reference_to_a_fulfilled_commerce_order(
    client, practice, site, patient, terminal, reception, reception_actor, provider_actor
):
    order = new_payment(
        reception_actor,
        practice,
        site,
        patient,
        terminal=terminal,
        target_type=TargetType.COMMERCE_ORDER,
        target_id="SHOP-1001",
    )
    services.payment_capture(payment_id=order.id, actor=provider_actor)
    client.force_login(reception)
    url = f"/payments/{order.id}/"
    assert "Add the PMS invoice reference" in client.get(url).content.decode()

    client.post(f"{url}invoice-ref/", {"pms_invoice_ref": "INV-5120"})
    page = client.get(url).content.decode()
    client.post(f"{url}invoice-ref/", {"pms_invoice_ref": "INV-9999"})

    order.refresh_from_db()
    assert order.pms_invoice_ref == "INV-5120"
    assert "Invoice reference recorded on 1 payment(s) of this order." in page
    assert "Add the PMS invoice reference" not in page and "INV-5120" in page
    assert "already has the invoice reference INV-5120" in client.get(url).content.decode()
