"""The staff portal: sign-in, tenancy, §13.4 filters, keyset pages, refund/void/approval flows."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.actors import Actor
from payments import services
from payments.models import (
    ApprovalRequest,
    Payment,
    PaymentMethod,
    PaymentState,
    Refund,
    TargetType,
)
from payments.selectors import _encode_cursor
from practices.roles import Role
from tests.factories import PatientFactory, PracticeFactory, SiteFactory, make_staff
from tests.payments.helpers import captured, new_payment


@pytest.fixture
def signed_in(client):
    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in


def test_anonymous_visitor_is_sent_to_sign_in(client, db):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    page = client.get(response["Location"])
    assert page.status_code == 200 and b"Sign in" in page.content


def test_sign_in_with_password_reaches_the_overview(client, reception):
    response = client.post(
        "/accounts/login/",
        {"username": reception.username, "password": "pass-word-123"},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Overview" in response.content


def test_a_user_without_a_role_is_refused(signed_in, db):
    from tests.factories import UserFactory

    assert signed_in(UserFactory()).get("/").status_code == 403


def test_list_shows_only_my_practice(
    signed_in, practice, site, patient, terminal, reception, reception_actor
):
    mine = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    other_practice = PracticeFactory()
    other_site = SiteFactory(practice=other_practice)
    theirs = new_payment(
        Actor.staff(make_staff(Role.RECEPTION, practice=other_practice)),
        other_practice,
        other_site,
        PatientFactory(practice=other_practice),
        method=PaymentMethod.CASH,
    )
    client = signed_in(reception)
    page = client.get("/payments/").content.decode()
    assert str(mine.id) in page and str(theirs.id) not in page
    assert client.get(f"/payments/{theirs.id}/").status_code == 404
    assert client.get(f"/payments/{theirs.id}/status/").status_code == 404


@pytest.fixture
def varied(
    practice, site, other_site, patient, terminal, reception_actor, provider_actor, refund_manager
):
    """A spread of payments to filter."""
    manager = Actor.staff(refund_manager)
    rows = {
        "terminal_captured": captured(
            reception_actor,
            provider_actor,
            practice,
            site,
            patient,
            terminal=terminal,
            amount="80.00",
        ),
        "cash_other_site": new_payment(
            manager,
            practice,
            other_site,
            PatientFactory(practice=practice, display_name="Zara Quinn"),
            method=PaymentMethod.CASH,
            amount="15.00",
            target_type=TargetType.DEPOSIT,
            target_id="DEP-7",
        ),
        "link_failed": new_payment(
            reception_actor,
            practice,
            site,
            patient,
            method=PaymentMethod.PAY_BY_LINK,
            amount="42.00",
            target_id="INV-LINK",
        ),
    }
    services.payment_fail(
        payment_id=rows["link_failed"].id, actor=provider_actor, code="declined", reason="Declined"
    )
    return rows


def _ids(response):
    return set(re.findall(r"/payments/([0-9a-f-]{36})/", response.content.decode()))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("method=cash", {"cash_other_site"}),
        ("state=failed", {"link_failed"}),
        ("target_type=deposit", {"cash_other_site"}),
        ("exception=failed", {"link_failed"}),
        ("q=INV-LINK", {"link_failed"}),
        ("q=Zara", {"cash_other_site"}),
        ("", {"terminal_captured", "cash_other_site", "link_failed"}),
    ],
)
def test_filters(signed_in, reception, varied, query, expected):
    response = signed_in(reception).get(f"/payments/?{query}")
    assert response.status_code == 200
    assert _ids(response) == {str(varied[name].id) for name in expected}


def test_site_staff_and_date_filters(signed_in, reception, varied, other_site, refund_manager):
    client = signed_in(reception)
    assert _ids(client.get(f"/payments/?site={other_site.id}")) == {
        str(varied["cash_other_site"].id)
    }
    assert _ids(client.get(f"/payments/?staff={refund_manager.pk}")) == {
        str(varied["cash_other_site"].id)
    }
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert _ids(client.get(f"/payments/?date_from={tomorrow}")) == set()
    response = client.get(f"/payments/?date_from={tomorrow}&date_to=2020-01-01")
    assert b"The end date must be on or after the start date." in response.content


def test_keyset_pages_cover_everything_once(
    signed_in, practice, site, patient, reception, reception_actor
):
    made = {
        new_payment(
            reception_actor,
            practice,
            site,
            patient,
            method=PaymentMethod.CASH,
            amount=f"{n + 1}.00",
        ).id
        for n in range(60)
    }
    client = signed_in(reception)
    for sort in ("newest", "amount_low"):
        first = client.get(f"/payments/?sort={sort}")
        cursor = re.search(r"after=([^\"&]+)", first.content.decode()).group(1)
        second = client.get(f"/payments/?sort={sort}&after={cursor}")
        seen = _ids(first) | _ids(second)
        assert len(_ids(first)) == 50 and len(_ids(second)) == 10
        assert seen == {str(i) for i in made}
        assert "after=" not in second.content.decode()


def test_a_page_link_from_another_sort_starts_the_list_again(
    signed_in, practice, site, patient, reception, reception_actor
):
    made = [
        new_payment(
            reception_actor,
            practice,
            site,
            patient,
            method=PaymentMethod.CASH,
            amount=f"{n + 1}.00",
        )
        for n in range(55)
    ]
    client = signed_in(reception)
    newest = client.get("/payments/?sort=newest").content.decode()
    cursor = re.search(r"after=([^\"&]+)", newest).group(1)

    for after in (cursor, "not-a-cursor", "WyJ4IiwgInkiXQ=="):  # the last: ["x", "y"]
        response = client.get(f"/payments/?sort=amount_high&after={after}")
        assert response.status_code == 200
        assert "That page link is out of date." in response.content.decode()
        highest = sorted(made, key=lambda p: p.amount, reverse=True)[:50]
        assert _ids(response) == {str(p.id) for p in highest}


def test_list_costs_the_same_queries_whatever_the_page(
    signed_in, practice, site, patient, reception, reception_actor, django_assert_max_num_queries
):
    for n in range(55):
        new_payment(
            reception_actor,
            practice,
            site,
            patient,
            method=PaymentMethod.CASH,
            amount=f"{n + 1}.00",
        )
    client = signed_in(reception)
    client.get("/payments/")  # warm the session
    with django_assert_max_num_queries(12):
        client.get("/payments/?method=cash&sort=amount_high")


def test_detail_shows_status_audit_and_receipt(signed_in, reception, varied):
    payment = varied["terminal_captured"]
    page = signed_in(reception).get(f"/payments/{payment.id}/").content.decode()
    assert (
        "Audit trail" in page
        and "payment.initiated" in page
        and "awaiting_customer_action → captured" in page
    )
    assert "Receipt" in page and "Pending" in page  # receipt message queued, not yet sent
    assert 'hx-trigger="every 500ms"' not in page  # final states are not polled


def test_status_panel_polls_while_waiting(
    signed_in, reception, reception_actor, provider_actor, practice, site, patient, terminal
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    services.payment_await_customer(payment_id=payment.id, actor=provider_actor)
    fragment = signed_in(reception).get(f"/payments/{payment.id}/status/").content.decode()
    assert 'hx-trigger="every 500ms"' in fragment and "waiting for the patient" in fragment
    services.payment_capture(payment_id=payment.id, actor=provider_actor)
    fragment = signed_in(reception).get(f"/payments/{payment.id}/status/").content.decode()
    assert "every 500ms" not in fragment and "Captured" in fragment


def _poll_text(client, payment, shown):
    return client.get(
        f"/payments/{payment.id}/status/?part=text&shown={shown}", HTTP_HX_REQUEST="true"
    )


def test_only_the_status_text_is_polled_and_the_controls_refresh_once_on_a_change(
    signed_in, refund_manager, reception_actor, provider_actor, practice, site, patient, terminal
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    services.payment_await_customer(payment_id=payment.id, actor=provider_actor)
    client = signed_in(refund_manager)
    page = client.get(f"/payments/{payment.id}/").content.decode()
    # The polled element holds no control; the live region around it is not polled.
    polled = re.search(
        r'<span id="status-text"[^>]*hx-trigger="every 500ms"[^>]*>(.*?)</span>', page
    )
    assert polled and "<a" not in polled.group(1) and "<button" not in polled.group(1)
    assert re.search(r'<p [^>]*id="status-live" role="status"[^>]*>\s*<span id="status-text"', page)
    detail = re.search(r'<div id="status-detail"([^>]*)>', page).group(1)
    assert 'hx-trigger="payment-status-changed from:body"' in detail and "every" not in detail
    assert 'id="void-link"' in page and 'id="refund-link"' not in page

    with CaptureQueriesContext(connection) as poll:
        unchanged = _poll_text(client, payment, "awaiting_customer_action")
    assert unchanged.status_code == 204 and unchanged.content == b""
    assert "HX-Trigger" not in unchanged
    with CaptureQueriesContext(connection) as full:
        client.get(f"/payments/{payment.id}/status/")
    # The poll's usual answer is cheaper than the panel: nothing is built or rendered.
    assert len(poll) < len(full) and not any("audit_" in q["sql"] for q in poll)

    services.payment_capture(payment_id=payment.id, actor=provider_actor)
    changed = _poll_text(client, payment, "awaiting_customer_action")
    assert changed.status_code == 200 and changed["HX-Trigger"] == "payment-status-changed"
    text = changed.content.decode()
    assert "Captured" in text and "hx-trigger" not in text  # final: the polling stops
    controls = client.get(f"/payments/{payment.id}/status/?part=detail").content.decode()
    assert 'id="refund-link"' in controls and 'id="void-link"' not in controls
    assert "hx-trigger" not in controls


def test_refund_form(signed_in, refund_manager, reception, varied):
    payment = varied["terminal_captured"]
    assert signed_in(reception).get(f"/payments/{payment.id}/refund/").status_code == 403
    client = signed_in(refund_manager)
    missing = client.post(f"/payments/{payment.id}/refund/", {"kind": "partial", "reason_code": ""})
    assert missing.status_code == 400
    body = missing.content.decode()
    assert "Enter the amount to refund." in body and "This field is required." in body
    too_much = client.post(
        f"/payments/{payment.id}/refund/",
        {"kind": "partial", "amount": "80.01", "reason_code": "other"},
    )
    assert (
        too_much.status_code == 400
        and "At most 80.00 GBP can still be refunded." in too_much.content.decode()
    )
    assert not Refund.objects.exists()
    done = client.post(
        f"/payments/{payment.id}/refund/",
        {
            "kind": "partial",
            "amount": "30.00",
            "reason_code": "billing_error",
            "notes": "overcharged",
        },
    )
    assert done.status_code == 302
    refund = Refund.objects.get()
    assert (
        refund.amount == Decimal("30.00")
        and refund.reason_code == "billing_error"
        and refund.requested_by == refund_manager
    )


def test_large_refund_goes_to_the_approvals_queue_and_is_approved(
    signed_in,
    practice,
    site,
    patient,
    terminal,
    reception_actor,
    provider_actor,
    refund_manager,
    approver,
):
    big = captured(
        reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="600.00"
    )
    response = signed_in(refund_manager).post(
        f"/payments/{big.id}/refund/",
        {"kind": "full", "reason_code": "service_not_rendered"},
        follow=True,
    )
    assert "needs approval by a second person" in response.content.decode()
    approval = ApprovalRequest.objects.get()
    own_queue = signed_in(refund_manager).get("/approvals/").content.decode()
    assert "only refund approvers can decide" in own_queue
    queue = signed_in(approver).get("/approvals/").content.decode()
    assert str(approval.id) in queue
    decided = signed_in(approver).post(
        f"/approvals/{approval.id}/decide/", {"decision": "grant", "note": "ok"}, follow=True
    )
    assert "Approved" in decided.content.decode()
    approval.refresh_from_db()
    assert approval.status == ApprovalRequest.Status.GRANTED and approval.refund.amount == Decimal(
        "600.00"
    )


def test_void_form(signed_in, refund_manager, reception_actor, practice, site, patient, terminal):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    client = signed_in(refund_manager)
    assert client.post(f"/payments/{payment.id}/void/", {"reason_code": ""}).status_code == 400
    assert (
        client.post(f"/payments/{payment.id}/void/", {"reason_code": "patient_request"}).status_code
        == 302
    )
    assert Payment.objects.get(pk=payment.id).state == PaymentState.VOIDED


def test_retry_from_the_status_panel(signed_in, reception, varied):
    failed = varied["link_failed"]
    response = signed_in(reception).post(f"/payments/{failed.id}/retry/")
    retry = Payment.objects.get(retry_of=failed)
    assert response["Location"] == f"/payments/{retry.id}/"


def test_refund_log_filters(signed_in, refund_manager, varied, practice):
    manager = Actor.staff(refund_manager)
    payment = varied["terminal_captured"]
    refund = services.refund_request(
        payment_id=payment.id, actor=manager, amount="5.00", reason_code="duplicate_charge"
    ).refund
    services.refund_complete(refund_id=refund.id, actor=Actor.provider("dna"))
    client = signed_in(refund_manager)
    assert (
        "Duplicate charge" in client.get("/refunds/?reason_code=duplicate_charge").content.decode()
    )
    assert (
        "No refunds or voids match." in client.get("/refunds/?reason_code=other").content.decode()
    )


def test_overview_shows_exception_banners_and_dashboard(signed_in, reception, varied):
    page = signed_in(reception).get("/").content.decode()
    assert "Failed payments: 1." in page
    assert "Method mix" in page and "£80.00" in page


CARD_FIELD = re.compile(
    r"<input[^>]*(name|id|autocomplete)=\"[^\"]*(card|pan|cvv|cvc|cc-)[^\"]*\"", re.I
)


def test_no_page_has_a_card_field(signed_in, refund_manager, varied):
    client = signed_in(refund_manager)
    payment = varied["terminal_captured"]
    for url in [
        "/",
        "/payments/",
        f"/payments/{payment.id}/",
        f"/payments/{payment.id}/refund/",
        "/approvals/",
        "/refunds/",
    ]:
        body = client.get(url).content.decode()
        assert not CARD_FIELD.search(body), url


def test_refund_log_pages_through_every_entry_once(
    signed_in, refund_manager, practice, site, patient, django_assert_max_num_queries
):
    manager = Actor.staff(refund_manager)
    voided = set()
    for _ in range(57):
        payment = new_payment(manager, practice, site, patient, method=PaymentMethod.CASH)
        services.payment_void(payment_id=payment.id, actor=manager, reason_code="other")
        voided.add(str(payment.id))
    client = signed_in(refund_manager)
    first = client.get("/refunds/?reason_code=other")
    cursor = re.search(r"after=([^\"&]+)", first.content.decode()).group(1)
    with django_assert_max_num_queries(12):
        second = client.get(f"/refunds/?reason_code=other&after={cursor}")
    assert len(_ids(first)) == 50 and len(_ids(second)) == 7
    assert _ids(first) | _ids(second) == voided
    assert "Next page" not in second.content.decode()
    assert "First page" in second.content.decode()
    assert 'href="?reason_code=other"' in second.content.decode()  # the filter is kept
    for broken in ("not-a-cursor", _encode_cursor(["yesterday", "x"])):
        assert _ids(client.get(f"/refunds/?reason_code=other&after={broken}")) == _ids(first)
        assert client.get(f"/payments/?after={broken}").status_code == 200


@pytest.mark.parametrize("path", ["/payments/", "/refunds/", "/communications/"])
def test_a_stale_page_link_starts_the_list_over_with_a_warning(signed_in, refund_manager, path):
    client = signed_in(refund_manager)

    response = client.get(path, {"after": "not-a-cursor", "date_from": "2026-01-01"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "That page link is out of date. Start again from the first page." in page
    assert "not-a-cursor" not in page  # the next-page links keep the filters, not the old cursor
