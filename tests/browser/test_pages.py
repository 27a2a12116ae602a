"""Every other page in a real browser, each checked with axe-core and screenshotted: the patient's
pay-by-link pages (checkout, outcomes, used, not found, expired, cancelled, reissue, provider down),
the link's status on the staff side, the virtual terminal behind the MFA step-up, forms
showing their errors, and the communications log."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pyotp
import pytest
from django.utils import timezone

from audit.actors import Actor
from integrations.dna.client import forget_tokens
from integrations.models import Destination, OutboxMessage
from integrations.relay import relay_due
from payments import deposits, flows, links, services
from payments.disputes import payment_flag_dispute
from payments.models import Payment, PaymentLink, PaymentMethod, PaymentState, TargetType
from practices.roles import Role
from tests.browser.conftest import sign_in, tab_to
from tests.factories import make_staff
from tests.integrations.conftest import pms_sim, relay_settings, sink  # noqa: F401
from tests.payments.helpers import captured

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

S = PaymentState


def _link_url(payment_id) -> str:
    """The newest link URL sent for a payment (the page and the API never show it again)."""
    return (
        OutboxMessage.objects.filter(
            destination=Destination.COMMUNICATION_HUB,
            event_type="payment_link.deliver",
            payment_id=payment_id,
        )
        .latest("created_at")
        .payload["url"]
    )


def _issue(actor, practice, site, patient, target_id: str) -> str:
    issued = flows.pay_by_link_issue(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=target_id,
        amount="30.00",
    )
    return issued.url


def _h1(page) -> str:
    return page.inner_text("h1")


def test_pay_by_link_from_composer_to_every_patient_page(
    page, a11y, live, live_server, settings, practice, site, patient
):
    reception = make_staff(Role.RECEPTION, practice=practice)
    base = live_server.url
    sign_in(page, base, reception)

    # The composer: a link for the invoice, by SMS; the payment shows the link's status.
    page.goto(
        f"{base}/patients/{patient.id}/pay/?target_type=invoice&target_id=INV-LINK-2&total=64.50"
    )
    page.check("input[name=method][value=pay_by_link]")
    page.select_option("#id_channel", "sms")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/payments/*/")
    payment = Payment.objects.get(target_id="INV-LINK-2")
    assert "queued for sending by SMS" in page.inner_text("main [role=status]")
    assert "Active" in page.inner_text("#link-heading + dl")
    assert "Queued for sending by Communication Hub" in page.inner_text("#link-heading + dl")
    first_url = _link_url(payment.id)

    page.click("#link-resend")
    page.wait_for_selector("text=A new link is queued for sending by SMS")
    assert "asked for 2 times" in page.inner_text("#link-heading + dl")
    a11y.check(page, "payment_link_resent")
    url = _link_url(payment.id)
    assert url != first_url

    # The patient, on their own phone.
    page.context.clear_cookies()
    page.goto(first_url)
    assert _h1(page) == "We could not find this payment link"
    a11y.check(page, "paylink_not_found")
    page.goto(url)
    assert _h1(page) == f"Pay {practice.name}" and "£64.50" in page.inner_text("main")

    # Our page that hands over to DNA's script, held still by keeping the script away.
    settings.DNA_CHECKOUT_MODE = "script"
    page.route("**/checkout/payment-api.js", lambda route: route.abort())
    page.click("main button[type=submit]")
    page.wait_for_selector("h1:text-is('Opening the secure payment page')")
    a11y.check(page, "paylink_checkout")
    page.unroute("**/checkout/payment-api.js")
    settings.DNA_CHECKOUT_MODE = "redirect"

    # Declined on DNA's page, then paid on the second try.
    page.goto(url)
    page.click("main button[type=submit]")
    page.click("button[value=decline]")
    page.wait_for_selector("h1:text-is('Payment not completed')")
    assert "No money was taken" in page.inner_text("main")
    a11y.check(page, "paylink_done_failed")
    page.click("button:text-is('Try again')")
    page.click("button[value=card]")
    page.wait_for_selector("h1:text-is('Payment received')")
    a11y.check(page, "paylink_done_paid")
    page.goto(url)
    assert _h1(page) == "This payment has already been made"
    a11y.check(page, "paylink_used")

    # A link left waiting: the outcome page while DNA has not answered.
    staff = Actor.staff(reception)
    waiting_url = _issue(staff, practice, site, patient, "INV-WAIT")
    page.goto(waiting_url)
    page.click("main button[type=submit]")  # to DNA's page, and leave it there
    page.goto(f"{waiting_url.rstrip('/')}/done/")
    assert _h1(page) == "Confirming your payment"
    a11y.check(page, "paylink_done_pending")

    # Expired: the patient asks for a new link.
    expired_url = _issue(staff, practice, site, patient, "INV-OLD")
    PaymentLink.objects.filter(payment__target_id="INV-OLD").update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    page.goto(expired_url)
    assert _h1(page) == "This payment link has expired"
    a11y.check(page, "paylink_expired")
    page.click("button:text-is('Ask the practice for a new link')")
    page.wait_for_selector("h1:text-is('We have asked the practice for a new link')")
    a11y.check(page, "paylink_reissue_requested")

    # Cancelled by the practice.
    cancelled_url = _issue(staff, practice, site, patient, "INV-CANCEL")
    links.payment_link_cancel(
        link_id=PaymentLink.objects.get(payment__target_id="INV-CANCEL").id, actor=staff
    )
    page.goto(cancelled_url)
    assert _h1(page) == "This payment link has been cancelled"
    a11y.check(page, "paylink_cancelled")

    # The payment moved on since the link was sent (authorised elsewhere): refused, plainly.
    moved_url = _issue(staff, practice, site, patient, "INV-MOVED")
    services.payment_authorise(
        payment_id=Payment.objects.get(target_id="INV-MOVED").id, actor=Actor.provider("dna")
    )
    page.goto(moved_url)
    page.click("main button[type=submit]")
    page.wait_for_selector("h1:text-is('This payment cannot be made with this link')")
    a11y.check(page, "paylink_refused")

    # DNA cannot be reached: nothing is taken, and the page says so.
    down_url = _issue(staff, practice, site, patient, "INV-DOWN")
    live.fault("/oauth2/token", "503", count=10)
    forget_tokens()
    page.goto(down_url)
    page.click("main button[type=submit]")
    page.wait_for_selector("h1:text-is('The payment page is not available right now')")
    assert "No payment has been taken." in page.inner_text("main")
    a11y.check(page, "paylink_error")

    # Too many pages from one address in a minute.
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "link": "1/min"}
    page.goto(down_url)
    assert _h1(page) == "Too many attempts"
    a11y.check(page, "paylink_rate_limited")
    a11y.assert_clean()

    payment.refresh_from_db()
    retry = Payment.objects.get(retry_of=payment)  # the declined attempt's successor
    assert (payment.state, retry.state) == (S.FAILED, S.CAPTURED)
    assert retry.link.status == PaymentLink.Status.USED


def test_virtual_terminal_behind_the_mfa_step_up(
    page, a11y, live, live_server, practice, site, patient
):
    practice.virtual_terminal_enabled = True
    practice.telephony_enabled = True
    practice.mfa_required = True
    practice.save()
    operator = make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=practice)
    base = live_server.url
    sign_in(page, base, operator)

    drawer = f"{base}/patients/{patient.id}/pay/?target_type=invoice&target_id=INV-VT&total=42.00"
    page.goto(drawer)
    page.check("input[name=method][value=virtual_terminal]")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/staff/mfa/*")
    assert _h1(page) == "Confirm it is you"
    a11y.check(page, "mfa_step_up")

    secret = page.inner_text("#mfa-secret").strip()
    tab_to(page, "#id_password")
    page.keyboard.type("not-my-password")
    tab_to(page, "#id_code")
    page.keyboard.type("000000")
    page.keyboard.press("Enter")
    page.wait_for_selector(".errorlist")
    assert "Your password is not right." in page.inner_text("main")
    a11y.check(page, "mfa_step_up_errors")

    page.fill("#id_password", "pass-word-123")
    page.fill("#id_code", pyotp.TOTP(secret).now())
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/patients/{patient.id}/pay/*")  # back to the drawer
    page.check("input[name=method][value=virtual_terminal]")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/payments/*/virtual-terminal/")
    assert "Call recording is paused" in page.inner_text("main")
    page.wait_for_selector("iframe[title='Secure card entry provided by DNA Payments']")
    a11y.check(page, "virtual_terminal")
    a11y.assert_clean()


def test_forms_with_their_errors_and_a_disputed_payment(
    page, a11y, live, live_server, practice, site, patient, terminal, reception_actor
):
    manager = make_staff(Role.REFUND_MANAGER, practice=practice)
    base = live_server.url
    sign_in(page, base, manager)

    page.goto(f"{base}/patients/{patient.id}/pay/?target_type=invoice&target_id=INV-E")
    page.check("input[name=method][value=terminal]")
    page.click("main button[type=submit]")
    page.wait_for_selector(".errorlist")
    assert "Choose the terminal the patient will use." in page.inner_text("main")
    a11y.check(page, "drawer_errors")

    paid = captured(
        reception_actor, Actor.provider("dna"), practice, site, patient, terminal=terminal
    )
    page.goto(f"{base}/payments/{paid.id}/refund/")
    page.check("input[name=kind][value=partial]")
    page.click("main button[type=submit]")
    page.wait_for_selector(".errorlist")
    assert "Enter the amount to refund." in page.inner_text("main")
    a11y.check(page, "refund_form_errors")

    payment_flag_dispute(
        payment_id=paid.id,
        actor=Actor.provider("dna"),
        reason="Goods or services not provided",
        provider_reference="CB-1",
    )
    page.goto(f"{base}/payments/{paid.id}/")
    page.click("#receipt-send")
    page.wait_for_selector("text=Receipt queued for Communication Hub")
    assert "Disputed." in page.inner_text("main")
    assert "Payment receipt (sent again)" in page.inner_text("main")
    a11y.check(page, "payment_disputed_receipt_resent")
    a11y.assert_clean()


def test_deposit_split_cancel_and_commerce_order_pages(
    page, a11y, live, live_server, practice, site, patient, terminal, reception_actor
):
    """The pages other parts of the portal added: a deposit, cancelling a split, an order's
    invoice reference."""
    finance = make_staff(Role.FINANCE_ADMIN, Role.REFUND_MANAGER, practice=practice)
    deposit = deposits.deposit_request(
        actor=Actor.system("appointment_manager"),
        practice=practice,
        site=site,
        patient=patient,
        appointment_id="APT-77",
        amount="50.00",
    )
    split = services.split_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-SPLIT-C",
        amount_due=Decimal("40.00"),
        tenders=[
            services.TenderSpec(PaymentMethod.CASH, Decimal("15.00"), None),
            services.TenderSpec(PaymentMethod.VOUCHER, Decimal("25.00"), None),
        ],
    )
    order = captured(
        reception_actor,
        Actor.provider("dna"),
        practice,
        site,
        patient,
        terminal=terminal,
        target_type=TargetType.COMMERCE_ORDER,
        target_id="ORD-9",
    )
    base = live_server.url
    sign_in(page, base, finance)

    page.goto(f"{base}/deposits/{deposit.id}/")
    assert "APT-77" in _h1(page)
    a11y.check(page, "deposit_detail")
    page.goto(f"{base}/splits/{split.id}/cancel/")
    page.click("main button[type=submit]")
    page.wait_for_selector(".errorlist")
    a11y.check(page, "split_cancel_errors")
    page.goto(f"{base}/payments/{order.id}/")
    assert "Add the PMS invoice reference" in page.inner_text("main")
    a11y.check(page, "payment_commerce_order")
    a11y.assert_clean()


def test_communications_log_with_each_delivery_and_a_filter(
    page,
    a11y,
    live_server,
    relay_settings,  # noqa: F811
    sink,  # noqa: F811
    practice,
    site,
    patient,
    terminal,
    reception,
    reception_actor,
):
    captured(reception_actor, Actor.provider("dna"), practice, site, patient, terminal=terminal)
    relay_due()  # the receipt: delivered to Communication Hub
    sink.mode = "reject"
    refused_url = _issue(reception_actor, practice, site, patient, "INV-REFUSED")
    relay_due()  # that link's message: refused, dead
    queued_url = _issue(reception_actor, practice, site, patient, "INV-QUEUED")
    base = live_server.url
    sign_in(page, base, reception)

    page.click("nav.main a:text-is('Communications')")
    page.wait_for_url(f"{base}/communications/")
    table = page.inner_text("main table")
    assert "Delivered to Communication Hub" in table and "Payment receipt" in table
    assert "Not delivered to Communication Hub" in table and "INV-REFUSED" in table
    assert "Queued for Communication Hub" in table and "INV-QUEUED" in table
    assert refused_url not in page.content() and queued_url not in page.content()
    a11y.check(page, "communications")

    page.select_option("#id_type", "payment_link.deliver")
    page.select_option("#id_status", "dead")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/communications/?*status=dead*")
    table = page.inner_text("main table")
    assert "INV-REFUSED" in table and "INV-QUEUED" not in table and "receipt" not in table
    a11y.check(page, "communications_filtered")
    a11y.assert_clean()
