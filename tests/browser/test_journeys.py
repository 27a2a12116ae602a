"""The staff journeys in a real browser: keyboard sign-in, a terminal payment captured live,
a partial refund, a split, a pay-by-link, and every page checked against WCAG 2.1 AA."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import structlog
from django.utils import timezone

from audit.actors import Actor
from integrations.dna.settlement import reconcile_settlements
from integrations.models import Destination, OutboxMessage
from integrations.simulators import signing
from payments import flows, services
from payments.models import Payment, PaymentLink, PaymentState, ReasonCode, TargetType
from practices.roles import Role
from tests.browser.conftest import assert_focus_kept, sign_in, tab_to, wait_for_text
from tests.factories import make_staff
from tests.payments.helpers import new_payment
from tests.portal.test_back_office import SettlementWithExceptions, unmatched_terminal_body
from tests.providers.conftest import TERMINAL_KEY_ID, TERMINAL_SECRET, json_body
from tests.subscriptions.conftest import publish, scenario

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

log = structlog.get_logger("tests.browser")
S = PaymentState
TID = "TIDPROV01"


def _focus_ring(page) -> dict:
    """The focused element and how its focus is drawn."""
    return page.evaluate(
        """() => {
          const e = document.activeElement, s = getComputedStyle(e), r = e.getBoundingClientRect();
          return {tag: e.tagName, id: e.id, text: (e.innerText || '').trim(),
                  outline: s.outlineStyle, width: parseFloat(s.outlineWidth),
                  left: r.left, top: r.top, visible: r.width > 0 && r.height > 0};
        }"""
    )


def test_keyboard_sign_in_terminal_payment_captured_live_then_part_refunded(
    page, a11y, live, live_server, practice, site, patient, sim_terminal
):
    user = make_staff(Role.REFUND_MANAGER, practice=practice)
    base = live_server.url

    page.goto(f"{base}/")  # not signed in: sent to the sign-in page
    page.wait_for_url(f"{base}/accounts/login/?next=/")
    a11y.check(page, "login")
    assert page.evaluate("document.activeElement.id") == "id_username"  # autofocus
    page.keyboard.type(user.username)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_password"
    page.keyboard.type("pass-word-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")

    # The skip link is the first stop, visible when focused, and moves focus to <main>.
    page.keyboard.press("Tab")
    ring = _focus_ring(page)
    assert ring["text"] == "Skip to main content" and ring["visible"] and ring["left"] >= 0
    assert ring["outline"] != "none" and ring["width"] >= 2
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.url.endswith("#main")
    a11y.check(page, "overview")

    # To the patient list (back up to the main navigation) and the drawer, by keyboard only.
    tab_to(page, 'nav.main a[href="/patients/"]', backwards=True)
    assert _focus_ring(page)["outline"] != "none"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/patients/")
    a11y.check(page, "patients")
    tab_to(page, f'a[href="/patients/{patient.id}/pay/"]')
    assert _focus_ring(page)["outline"] != "none"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/patients/{patient.id}/pay/")
    a11y.check(page, "drawer")
    tab_to(page, "#id_target_id")
    page.keyboard.type("INV-KEY-1")
    tab_to(page, "#id_amount")
    assert _focus_ring(page)["outline"] != "none"
    page.keyboard.type("85.00")
    tab_to(page, "input[name=method]")
    assert page.evaluate("document.activeElement.value") == "terminal"
    page.keyboard.press("Space")
    tab_to(page, "#id_terminal")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.value") == str(sim_terminal.id)
    tab_to(page, "button[type=submit]:not(header button)")
    assert _focus_ring(page)["outline"] != "none"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/payments/*/")

    payment = Payment.objects.get(target_id="INV-KEY-1")
    assert payment.state == S.AWAITING_CUSTOMER_ACTION and str(payment.amount) == "85.00"
    wait_for_text(page, "#status-panel", "waiting for the patient")
    assert "Awaiting customer action" in page.inner_text("#status-panel")
    a11y.check(page, "payment_awaiting")

    # While the status is polled, a control the person is on keeps focus.
    tab_to(page, "#void-link")
    assert_focus_kept(page, "void-link")

    # The patient approves on the terminal: "Captured" appears without a reload.
    page.evaluate("window.__samePage = true")
    started = time.monotonic()
    live.terminal(TID, "approve")
    wait_for_text(page, "#status-panel .live-status", "Captured")
    elapsed = time.monotonic() - started
    log.warning("approve_to_on_screen", seconds=round(elapsed, 3))
    print(f"approve -> 'Captured' on screen: {elapsed:.3f} s")
    assert page.evaluate("window.__samePage") is True  # no navigation happened
    # The other panels follow the new state once, still without a reload.
    payment.refresh_from_db()
    assert payment.provider_reference
    wait_for_text(page, "#details-panel", payment.provider_reference)
    wait_for_text(page, "#receipt-panel", "Paid by card terminal")
    wait_for_text(page, "#audit-panel", "awaiting_customer_action → captured")
    assert page.evaluate("window.__samePage") is True
    # "Void" is gone with the new state: focus moves to the control that replaced it.
    page.wait_for_selector("#refund-link")
    assert page.evaluate("document.activeElement.id") == "refund-link"
    a11y.check(page, "payment_captured")

    # Refund part of it, by keyboard only.
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/payments/{payment.id}/refund/")
    a11y.check(page, "refund_form")
    tab_to(page, "input[name=kind]")
    assert page.evaluate("document.activeElement.value") == "full"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.value") == "partial"
    assert page.is_checked("input[name=kind][value=partial]")
    tab_to(page, "#id_amount")
    page.keyboard.type("20.00")
    tab_to(page, "#id_reason_code")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.value") == "patient_request"
    tab_to(page, "main button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/payments/{payment.id}/")
    assert "Refund of £20.00 started." in page.inner_text("main [role=status]")
    wait_for_text(page, "#status-panel .live-status", "Partially refunded")
    payment.refresh_from_db()
    assert payment.state == S.PARTIALLY_REFUNDED and str(payment.refunded_amount) == "20.00"
    a11y.check(page, "payment_detail_refunded")
    a11y.assert_clean()


def test_split_cash_voucher_and_terminal_settles_live_by_keyboard(
    page, a11y, live, live_server, practice, site, patient, sim_terminal
):
    user = make_staff(Role.RECEPTION, practice=practice)
    base = live_server.url
    sign_in(page, base, user)

    page.goto(f"{base}/patients/")
    tab_to(page, f'a[href="/patients/{patient.id}/split/"]')
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/patients/{patient.id}/split/")
    a11y.check(page, "split_new")

    # Tenders that do not add up are refused, and the form says why.
    tab_to(page, "#id_target_id")
    page.keyboard.type("INV-SPLIT-1")
    tab_to(page, "#id_amount_due")
    page.keyboard.type("100.00")
    # Method options: Not used, Card on terminal, Cash, Voucher.
    for row, (presses, amount) in enumerate([(2, "30.00"), (3, "20.00"), (1, "40.00")], start=1):
        tab_to(page, f"#id_method_{row}")
        for _ in range(presses):
            page.keyboard.press("ArrowDown")
        tab_to(page, f"#id_amount_{row}")
        page.keyboard.type(amount)
    tab_to(page, "#id_terminal_3")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.value") == str(sim_terminal.id)
    tab_to(page, "main button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("main [role=alert]")
    assert "short of 100.00" in page.inner_text("main [role=alert]")
    a11y.check(page, "split_new_errors")

    tab_to(page, "#id_amount_3")
    page.keyboard.press("Control+A")
    page.keyboard.type("50.00")
    tab_to(page, "main button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/splits/*/")
    assert "Remaining to collect: £100.00" in page.inner_text("#split-tenders")
    tenders = {t.method: t for t in Payment.objects.filter(target_id="INV-SPLIT-1")}
    cash, voucher, card = (f"tender-{tenders[m].id}-" for m in ("cash", "voucher", "terminal"))

    tab_to(page, f"#{cash}received")
    assert_focus_kept(page, f"{cash}received")  # the page polls; the button keeps focus
    page.keyboard.press("Enter")
    wait_for_text(page, "#split-live", "Remaining to collect: £70.00")
    # The pressed button is gone: focus moves on to the next tender's action.
    page.wait_for_function("id => document.activeElement.id === id", arg=f"{voucher}received")
    page.keyboard.press("Enter")
    wait_for_text(page, "#split-live", "Remaining to collect: £50.00")
    page.wait_for_function("id => document.activeElement.id === id", arg=f"{card}send")
    assert_focus_kept(page, f"{card}send")
    page.keyboard.press("Enter")
    wait_for_text(page, "#split-tenders", "Awaiting customer action")
    assert "awaiting customer action" in page.inner_text("#split-live")
    # No control left to act on: focus is on the page heading, not lost.
    page.wait_for_function("document.activeElement.id === 'split-heading'")
    assert_focus_kept(page, "split-heading")
    a11y.check(page, "split_in_progress")

    page.evaluate("window.__samePage = true")
    live.terminal(TID, "approve")
    wait_for_text(page, "#split-tenders .live-status", "Settled")
    assert page.evaluate("window.__samePage") is True
    assert "All tenders captured." in page.inner_text("#split-tenders")
    a11y.check(page, "split_settled")
    a11y.assert_clean()


def test_a_declined_split_tender_is_retried_by_keyboard(
    page, a11y, live, live_server, practice, site, patient, sim_terminal
):
    user = make_staff(Role.RECEPTION, practice=practice)
    split = services.split_create(
        actor=Actor.staff(user),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-SPLIT-2",
        amount_due="60.00",
        tenders=[
            services.TenderSpec("cash", Decimal("20.00"), None),
            services.TenderSpec("terminal", Decimal("40.00"), sim_terminal),
        ],
    )
    cash, card = Payment.objects.filter(split=split).order_by("created_at")
    base = live_server.url
    sign_in(page, base, user)
    page.goto(f"{base}/splits/{split.id}/")
    tab_to(page, f"#tender-{card.id}-send")
    page.keyboard.press("Enter")
    wait_for_text(page, "#split-live", "awaiting customer action")
    live.terminal(TID, "decline")
    wait_for_text(page, "#split-live", "Card terminal on Reception 1: failed.")
    page.wait_for_selector(f"#tender-{card.id}-retry")
    assert "The card was declined" in page.inner_text("#split-table")
    # What the failed card no longer covers can also be taken another way.
    assert "£40.00 is not covered" in page.inner_text("#split-table")
    assert page.is_visible("#split-add-tender")
    a11y.check(page, "split_tender_failed")

    tab_to(page, f"#tender-{card.id}-retry")
    page.keyboard.press("Enter")
    wait_for_text(page, "#split-live", "awaiting customer action")
    retry = Payment.objects.get(retry_of=card)
    assert retry.split_id == split.id and retry.state == S.AWAITING_CUSTOMER_ACTION
    # The retry button went with the failure; focus moved to the cash tender's action.
    page.wait_for_function(
        "id => document.activeElement.id === id", arg=f"tender-{cash.id}-received"
    )
    live.terminal(TID, "approve")
    wait_for_text(page, "#split-live", "Remaining to collect: £20.00")
    page.keyboard.press("Enter")
    wait_for_text(page, "#split-tenders .live-status", "Settled")
    a11y.check(page, "split_settled_after_retry")
    a11y.assert_clean()


def test_pay_by_link_sent_and_the_patients_pages(
    page, a11y, live, live_server, practice, site, patient
):
    user = make_staff(Role.RECEPTION, practice=practice)
    base = live_server.url
    sign_in(page, base, user)

    page.goto(
        f"{base}/patients/{patient.id}/pay/?target_type=invoice&target_id=INV-LINK-1&total=64.50"
    )
    page.check("input[name=method][value=pay_by_link]")
    page.select_option("#id_channel", "sms")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/payments/*/")
    assert "Payment link queued for sending by SMS" in page.inner_text("main [role=status]")
    a11y.check(page, "payment_link_sent")

    delivery = OutboxMessage.objects.get(
        destination=Destination.COMMUNICATION_HUB, event_type="payment_link.deliver"
    )
    url = delivery.payload["url"]
    assert url.startswith(f"{base}/pay/")

    page.context.clear_cookies()  # the patient, on their own phone
    page.goto(url)
    assert page.inner_text("h1") == f"Pay {practice.name}"
    assert "£64.50" in page.inner_text("main")
    a11y.check(page, "paylink")

    link = PaymentLink.objects.get()
    PaymentLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    page.goto(url)
    assert page.inner_text("h1") == "This payment link has expired"
    a11y.check(page, "paylink_expired")
    a11y.assert_clean()


def _unmatched_terminal_event(base_url: str, terminal) -> None:
    """DNA's terminal webhook for a payment we never made (kept as unmatched)."""
    body = json_body(unmatched_terminal_body(terminal))
    target = f"{base_url}/webhooks/dna/terminal/"
    headers = signing.http_message_signature(
        method="POST",
        target_uri=target,
        body=body,
        secret=TERMINAL_SECRET,
        keyid=TERMINAL_KEY_ID,
        created=int(time.time()),
    )
    answer = httpx.post(
        target, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == 200, answer.text


def test_every_back_office_page(
    page,
    a11y,
    live,
    live_server,
    practice,
    site,
    patient,
    sim_terminal,
    refund_manager,
    gc_api,
    deliver,
):
    """Overview, payments (with filters), detail, void, approvals, refunds log, subscriptions
    and exceptions, for a finance admin who also approves refunds."""
    base = live_server.url
    staff = Actor.staff(refund_manager)
    declined = flows.terminal_payment_start(
        actor=staff,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-DECLINED",
        amount="42.00",
        terminal=sim_terminal,
    )
    live.terminal(TID, "decline")
    paid = flows.terminal_payment_start(
        actor=staff,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-PAID",
        amount="300.00",
        terminal=sim_terminal,
    )
    live.terminal(TID, "approve")
    services.refund_request(
        payment_id=paid.id, actor=staff, amount="12.00", reason_code=ReasonCode.BILLING_ERROR
    )
    services.refund_request(
        payment_id=paid.id, actor=staff, amount="260.00", reason_code=ReasonCode.PATIENT_REQUEST
    )  # above the practice's £250 threshold: waits for a second person
    pending = new_payment(staff, practice, site, patient, terminal=sim_terminal, amount="15.00")
    paid.refresh_from_db()
    assert reconcile_settlements(source=SettlementWithExceptions(paid)).exceptions == 2
    _unmatched_terminal_event(base, sim_terminal)
    landscape = [
        scenario("payment_confirmed", practice, patient, module="care_plan", mandate_ref="CP-B1"),
        scenario("payment_failed", practice, patient, module="hygiene", mandate_ref="HY-B1"),
    ]
    for built in landscape:
        publish(gc_api, built)
    deliver([event for built in landscape for event in built.events])

    finance = make_staff(Role.FINANCE_ADMIN, Role.REFUND_APPROVER, practice=practice)
    sign_in(page, base, finance)
    assert "Failed payments: 1." in page.inner_text("main")
    a11y.check(page, "overview_with_exceptions")

    page.goto(f"{base}/payments/")
    a11y.check(page, "payments")
    page.select_option("#id_exception", "failed")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/payments/?*exception=failed*")
    assert "INV-DECLINED" in page.inner_text("main table")
    assert "INV-PAID" not in page.inner_text("main table")
    a11y.check(page, "payments_filtered")

    page.goto(f"{base}/payments/{declined.id}/")
    assert "The card was declined" in page.inner_text("#status-panel")
    a11y.check(page, "payment_failed")
    page.goto(f"{base}/payments/{paid.id}/")
    a11y.check(page, "payment_detail")
    page.goto(f"{base}/payments/{pending.id}/void/")
    a11y.check(page, "void_form")
    page.click("main button[type=submit]")  # no reason chosen: the form says so
    assert page.locator(".errorlist").count() >= 1
    a11y.check(page, "void_form_errors")
    page.goto(f"{base}/patients/")
    assert "Failed payment" in page.inner_text("main table")
    a11y.check(page, "patients_with_badges")
    page.goto(f"{base}/approvals/")
    assert "£260.00" in page.inner_text("main table")
    a11y.check(page, "approvals")
    page.goto(f"{base}/refunds/")
    assert "£12.00" in page.inner_text("main table")
    a11y.check(page, "refunds_log")
    page.goto(f"{base}/deposits/")
    a11y.check(page, "deposits")
    page.goto(f"{base}/subscriptions/")
    assert "HY-B1" in page.inner_text("main") and "Failed: 1 subscription." in page.inner_text(
        "main"
    )
    a11y.check(page, "subscriptions")
    page.goto(f"{base}/exceptions/")
    assert "Amount mismatch" in page.inner_text("main")
    assert "Provider events with no matching payment (1)" in page.inner_text("main")
    a11y.check(page, "reconciliation_exceptions")
    a11y.assert_clean()
