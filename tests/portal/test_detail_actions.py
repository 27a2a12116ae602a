"""The payment detail beyond the lifecycle: receipt preview and "Send receipt again",
the pay-by-link status with Cancel and Resend, and the disputed banner."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import flows, receipts, services
from payments.disputes import payment_flag_dispute
from payments.errors import PaymentError
from payments.links import payment_link_cancel, payment_link_resend
from payments.models import PaymentLink, PaymentMethod, PaymentState, TargetType
from payments.services import RewardsCredit
from practices.roles import Role
from tests.factories import make_staff
from tests.payments.helpers import captured, new_payment

S = PaymentState


def _receipts(payment):
    return OutboxMessage.objects.filter(
        payment_id=payment.id,
        destination=Destination.COMMUNICATION_HUB,
        event_type="receipt.requested",
    ).order_by("created_at")


@pytest.fixture
def paid(reception_actor, provider_actor, practice, site, patient, terminal):
    return captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)


# --- receipts -------------------------------------------------------------------------------


def test_receipt_preview_shows_the_rewards_credit_before_and_after_capture(
    client, reception, reception_actor, provider_actor, practice, site, patient, terminal
):
    payment = new_payment(
        reception_actor,
        practice,
        site,
        patient,
        terminal=terminal,
        amount="90.00",
        rewards_credit=RewardsCredit(amount=Decimal("15.00"), reference="RW-77"),
    )
    client.force_login(reception)
    page = client.get(f"/payments/{payment.id}/").content.decode()
    preview = re.search(r'<dl class="facts" id="receipt-preview">(.*?)</dl>', page, re.S).group(1)
    assert "Receipt preview" in page and "once the payment is captured" in page
    assert "Rewards credit</dt><dd>−£15.00 (RW-77)" in preview
    assert "To pay by card terminal</dt><dd>£75.00" in preview
    assert "The receipt is requested when the payment is captured." in page
    assert 'id="receipt-send"' not in page  # nothing to send yet

    services.payment_await_customer(payment_id=payment.id, actor=provider_actor)
    services.payment_capture(payment_id=payment.id, actor=provider_actor)
    page = client.get(f"/payments/{payment.id}/").content.decode()
    preview = re.search(r'<dl class="facts" id="receipt-preview">(.*?)</dl>', page, re.S).group(1)
    assert "Rewards credit</dt><dd>−£15.00 (RW-77)" in preview
    assert "Paid by card terminal</dt><dd>£75.00 on" in preview
    # Honest about what we know: queued for Communication Hub, no channel claimed.
    assert "Payment receipt" in page and "Queued for Communication Hub" in page
    assert "(app first)" not in page


def test_send_receipt_again_queues_a_marked_message_and_audits_it(client, reception, paid):
    client.force_login(reception)
    assert _receipts(paid).count() == 1
    assert 'id="receipt-send"' in client.get(f"/payments/{paid.id}/").content.decode()

    response = client.post(f"/payments/{paid.id}/receipt/", follow=True)

    page = response.content.decode()
    assert "Receipt queued for Communication Hub" in page
    first, again = _receipts(paid)
    assert "resend" not in first.payload
    assert again.payload["resend"] is True and again.payload["receipt_kind"] == "payment"
    assert again.payload["captured_amount"] == "100.00"
    assert again.payload["channels"] == ["app", "email", "sms"]
    event = AuditEvent.objects.get(payment_id=paid.id, event_type=EventType.RECEIPT_RESENT)
    assert event.actor_id == str(reception.pk)
    assert event.payload["outbox_message_id"] == str(again.id)
    assert "Payment receipt (sent again)" in page


def test_a_refunded_payments_receipt_again_shows_the_refund(
    client, reception, refund_manager, paid
):
    manager = Actor.staff(refund_manager)
    refund = services.refund_request(
        payment_id=paid.id, actor=manager, amount="30.00", reason_code="billing_error"
    ).refund
    services.refund_complete(refund_id=refund.id, actor=Actor.provider("dna"))
    client.force_login(reception)
    client.post(f"/payments/{paid.id}/receipt/")
    again = _receipts(paid).last()
    assert again.payload["resend"] is True and again.payload["refunded_total"] == "30.00"
    assert [m.payload["receipt_kind"] for m in _receipts(paid)] == ["payment", "refund", "payment"]


def test_send_receipt_is_refused_without_the_permission_or_before_payment(
    client, approver, reception, reception_actor, practice, site, patient, terminal, paid
):
    client.force_login(approver)  # sees payments, does not take them
    assert 'id="receipt-send"' not in client.get(f"/payments/{paid.id}/").content.decode()
    assert client.post(f"/payments/{paid.id}/receipt/").status_code == 403
    waiting = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    with pytest.raises(PaymentError, match="Only a paid payment"):
        receipts.receipt_resend(payment_id=waiting.id, actor=reception_actor)
    client.force_login(reception)
    response = client.post(f"/payments/{waiting.id}/receipt/", follow=True)
    assert "Only a paid payment" in response.content.decode()
    assert _receipts(paid).count() == 1 and not _receipts(waiting).exists()
    assert not AuditEvent.objects.filter(event_type=EventType.RECEIPT_RESENT).exists()


def test_a_split_tender_sends_the_splits_receipt_again(
    client, reception, reception_actor, practice, site, patient
):
    split = services.split_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-S",
        amount_due=Decimal("50.00"),
        tenders=[
            services.TenderSpec(PaymentMethod.CASH, Decimal("30.00"), None),
            services.TenderSpec(PaymentMethod.VOUCHER, Decimal("20.00"), None),
        ],
    )
    cash, voucher = split.tenders.order_by("created_at")
    services.tender_record_received(payment_id=cash.id, actor=reception_actor)
    with pytest.raises(PaymentError):  # the split is not settled: no receipt yet
        receipts.receipt_resend(payment_id=cash.id, actor=reception_actor)
    services.tender_record_received(payment_id=voucher.id, actor=reception_actor)
    client.force_login(reception)
    page = client.get(f"/payments/{voucher.id}/").content.decode()
    assert "Split receipt" in page  # the split's receipt is listed on every tender
    client.post(f"/payments/{voucher.id}/receipt/")
    again = OutboxMessage.objects.filter(event_type="receipt.requested").order_by("created_at")
    assert again.count() == 2
    assert again.last().payload["receipt_kind"] == "split" and again.last().payload["resend"]
    assert {t["payment_id"] for t in again.last().payload["tenders"]} == {
        str(cash.id),
        str(voucher.id),
    }


# --- pay-by-link status, cancel and resend --------------------------------------------------


@pytest.fixture
def issued(reception_actor, practice, site, patient, settings):
    settings.PUBLIC_BASE_URL = "http://testserver"
    return flows.pay_by_link_issue(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-L1",
        amount="64.50",
        channel="sms",
    )


def test_link_status_expiry_and_sending_are_shown_honestly(client, reception, issued):
    client.force_login(reception)
    page = client.get(f"/payments/{issued.link.payment_id}/").content.decode()
    assert '<span class="badge active">Active</span>' in page
    assert f"Expires</dt><dd>{issued.link.expires_at:%-d %b %Y %H:%M} UTC" in page
    assert "SMS first" in page and "Queued for sending by Communication Hub" in page
    assert 'id="link-resend"' in page and 'id="link-cancel"' in page

    OutboxMessage.objects.filter(event_type="payment_link.deliver").update(
        status=OutboxMessage.Status.DELIVERED, delivered_at=timezone.now()
    )
    PaymentLink.objects.filter(pk=issued.link.pk).update(
        expires_at=timezone.now() - timedelta(minutes=5)
    )
    page = client.get(f"/payments/{issued.link.payment_id}/").content.decode()
    assert '<span class="badge expired">Expired</span>' in page
    assert "Delivered to Communication Hub" in page


def test_resend_gives_a_new_working_link_and_the_old_one_stops(client, reception, issued):
    PaymentLink.objects.filter(pk=issued.link.pk).update(
        expires_at=timezone.now() - timedelta(minutes=5)
    )
    client.force_login(reception)
    payment_id = issued.link.payment_id

    response = client.post(f"/payments/{payment_id}/link/resend/", follow=True)

    assert "A new link is queued for sending by SMS" in response.content.decode()
    link = PaymentLink.objects.get()
    assert link.status == PaymentLink.Status.ACTIVE and link.expires_at > timezone.now()
    first, second = OutboxMessage.objects.filter(event_type="payment_link.deliver").order_by(
        "created_at"
    )
    assert second.payload["url"] != first.payload["url"]
    assert second.payload["channels"][0] == "sms"
    client.logout()
    assert client.get(first.payload["url"]).status_code == 404  # the old token is gone
    fresh = client.get(second.payload["url"])
    assert fresh.status_code == 200 and "£64.50" in fresh.content.decode()
    event = AuditEvent.objects.get(event_type=EventType.PAYMENT_LINK_RESENT)
    assert event.subject_id == str(link.id) and event.payload["outbox_message_id"] == str(second.id)


def test_cancel_link_voids_the_payment_and_is_audited(client, reception, issued):
    client.force_login(reception)
    payment_id = issued.link.payment_id
    response = client.post(f"/payments/{payment_id}/link/cancel/", follow=True)
    page = response.content.decode()
    assert "Payment link cancelled" in page
    assert '<span class="badge cancelled">Cancelled</span>' in page
    assert 'id="link-resend"' not in page and 'id="link-cancel"' not in page
    link = PaymentLink.objects.get()
    assert link.status == PaymentLink.Status.CANCELLED and link.payment.state == S.VOIDED
    event = AuditEvent.objects.get(event_type=EventType.PAYMENT_LINK_CANCELLED)
    assert event.actor_id == str(reception.pk) and event.payload["status"] == "cancelled"
    with pytest.raises(PaymentError, match="cancelled"):
        payment_link_resend(link_id=link.id, actor=Actor.staff(reception))


def test_link_actions_need_the_pay_by_link_permission(client, practice, issued):
    finance = make_staff(Role.FINANCE_ADMIN, practice=practice)
    client.force_login(finance)
    payment_id = issued.link.payment_id
    page = client.get(f"/payments/{payment_id}/").content.decode()
    assert 'id="link-resend"' not in page and 'id="link-cancel"' not in page
    assert client.post(f"/payments/{payment_id}/link/resend/").status_code == 403
    assert client.post(f"/payments/{payment_id}/link/cancel/").status_code == 403
    assert PaymentLink.objects.get().status == PaymentLink.Status.ACTIVE
    assert OutboxMessage.objects.filter(event_type="payment_link.deliver").count() == 1


def test_only_staff_and_the_system_manage_a_link(issued, patient, provider_actor):
    link = issued.link
    for outsider in (Actor.for_patient(patient), provider_actor):
        for action in (payment_link_resend, payment_link_cancel):
            with pytest.raises(PaymentError) as refused:
                action(link_id=link.id, actor=outsider)
            assert refused.value.code == "permission_denied"
    link.refresh_from_db()
    assert link.status == PaymentLink.Status.ACTIVE and link.payment.state != S.VOIDED
    assert OutboxMessage.objects.filter(event_type="payment_link.deliver").count() == 1


def test_a_paid_link_cannot_be_resent_or_cancelled(
    client, reception, reception_actor, provider_actor, issued
):
    payment = issued.link.payment
    services.payment_capture(payment_id=payment.id, actor=provider_actor)
    client.force_login(reception)
    page = client.get(f"/payments/{payment.id}/").content.decode()
    assert '<span class="badge used">Used</span>' in page
    assert 'id="link-resend"' not in page and 'id="link-cancel"' not in page
    response = client.post(f"/payments/{payment.id}/link/resend/", follow=True)
    assert "issue a new payment instead" in response.content.decode()
    assert OutboxMessage.objects.filter(event_type="payment_link.deliver").count() == 1


# --- disputes -------------------------------------------------------------------------------


def test_a_disputed_payment_has_a_banner_with_the_reason(client, reception, paid):
    client.force_login(reception)
    assert "Disputed." not in client.get(f"/payments/{paid.id}/").content.decode()
    payment_flag_dispute(
        payment_id=paid.id,
        actor=Actor.provider("dna"),
        reason="Fraudulent transaction",
        provider_reference="CB-991",
    )
    page = client.get(f"/payments/{paid.id}/").content.decode()
    banner = re.search(
        r'<div class="banner" role="status"><strong>Disputed\.</strong>(.*?)</div>', page
    )
    assert banner and "Fraudulent transaction (reference CB-991)" in banner.group(1)
