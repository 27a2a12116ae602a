"""Cancelling an open split from its page; adding a fulfilled order's PMS invoice reference."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from payments import services
from payments.models import Payment, PaymentMethod, PaymentState, SplitPayment, TargetType
from payments.services import TenderSpec
from practices.roles import Role
from tests.factories import make_staff
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


def test_reception_adds_a_tender_in_place_of_a_voided_one(client, split, reception, practice):

    voucher = Payment.objects.get(split=split, method=PaymentMethod.VOUCHER)
    services.payment_void(
        payment_id=voucher.id, actor=Actor.system("test"), reason_code="patient_request"
    )
    client.force_login(reception)
    url = f"/splits/{split.id}/"
    page = client.get(url).content.decode()
    assert "Add a tender" in page and "£60.00 is not covered" in page

    too_much = client.post(f"{url}tenders/", {"method": "cash", "amount": "70.00"})
    no_terminal = client.post(f"{url}tenders/", {"method": "terminal", "amount": "60.00"})
    added = client.post(f"{url}tenders/", {"method": "cash", "amount": "60.00"}, follow=True)

    assert too_much.status_code == 400
    assert "At most £60.00 is not covered by another tender." in too_much.content.decode()
    assert no_terminal.status_code == 400
    assert "Choose the terminal for the card tender." in no_terminal.content.decode()
    assert added.redirect_chain == [(url, 302)]
    assert "Cash tender of £60.00 added." in added.content.decode()
    assert "Add a tender" not in added.content.decode()  # everything is covered again
    tender = Payment.objects.get(split=split, method=PaymentMethod.CASH, amount=Decimal("60.00"))
    assert tender.state == S.INITIATED and tender.initiated_by_user == reception
    event = AuditEvent.objects.get(event_type=EventType.SPLIT_TENDER_ADDED)
    assert event.payload["payment_id"] == str(tender.id)


def test_adding_a_tender_needs_the_permission_to_take_payments(client, split, practice):

    voucher = Payment.objects.get(split=split, method=PaymentMethod.VOUCHER)
    services.payment_void(payment_id=voucher.id, actor=Actor.system("test"), reason_code="other")
    client.force_login(make_staff(Role.FINANCE_ADMIN, practice=practice))
    url = f"/splits/{split.id}/"

    assert "Add a tender" not in client.get(url).content.decode()
    assert client.post(f"{url}tenders/", {"method": "cash", "amount": "60.00"}).status_code == 403
    assert Payment.objects.filter(split=split).count() == 2


def test_a_card_tender_is_added_on_the_chosen_terminal(client, split, reception, terminal):
    voucher = Payment.objects.get(split=split, method=PaymentMethod.VOUCHER)
    services.payment_void(payment_id=voucher.id, actor=Actor.system("test"), reason_code="other")
    client.force_login(reception)

    added = client.post(
        f"/splits/{split.id}/tenders/",
        {"method": "terminal", "amount": "60.00", "terminal": str(terminal.id)},
    )

    assert added.status_code == 302
    card = Payment.objects.get(split=split, method=PaymentMethod.TERMINAL)
    assert card.terminal_id == terminal.id and card.state == S.INITIATED
    table = client.get(f"/splits/{split.id}/?part=table").content.decode()
    assert f'id="tender-{card.id}-send"' in table  # sent from the table like any card tender
