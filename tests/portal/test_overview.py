"""The overview's charts (aggregated in SQL, scoped, constant queries), the §5.4 exception
banners whose links show exactly what they count, and the patients' payment badges."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.actors import Actor
from payments import flows, selectors, services
from payments.disputes import payment_flag_dispute
from payments.models import Payment, PaymentMethod, TargetType
from payments.portal import charts
from practices.roles import Role
from tests.factories import PatientFactory, make_staff
from tests.payments.helpers import captured, new_payment


def _started(payment, *, days_ago: int, at: time = time(12), seconds_to_capture: int | None = None):
    """Move a payment's start (and capture) back to a known moment, UTC."""
    today = timezone.now().astimezone(UTC).date()
    created = datetime.combine(today - timedelta(days=days_ago), at, tzinfo=UTC)
    fields = {"created_at": created}
    if seconds_to_capture is not None:
        fields["captured_at"] = created + timedelta(seconds=seconds_to_capture)
    Payment.objects.filter(pk=payment.pk).update(**fields)


def _failed(actor, practice, site, patient, **extra):
    payment = new_payment(actor, practice, site, patient, method=PaymentMethod.PAY_BY_LINK, **extra)
    services.payment_fail(
        payment_id=payment.id, actor=Actor.provider("dna"), code="declined", reason="Declined"
    )
    return payment


@pytest.fixture
def mine(practice, site, other_site, patient, terminal, reception_actor, provider_actor):
    """A month of payments at `site`, one at `other_site`, one older than the window."""
    made = {
        "card_today": captured(
            reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="80"
        ),
        "link_today": captured(
            reception_actor,
            provider_actor,
            practice,
            site,
            patient,
            terminal=None,
            method=PaymentMethod.PAY_BY_LINK,
            amount="20",
        ),
        "failed_today": _failed(reception_actor, practice, site, patient),
        "card_2_days": captured(
            reception_actor,
            provider_actor,
            practice,
            site,
            patient,
            terminal=terminal,
            amount="100",
        ),
        "elsewhere": captured(
            reception_actor,
            provider_actor,
            practice,
            other_site,
            patient,
            terminal=None,
            method=PaymentMethod.PAY_BY_LINK,
            amount="500",
        ),
        "too_old": captured(
            reception_actor,
            provider_actor,
            practice,
            site,
            patient,
            terminal=terminal,
            amount="999",
        ),
    }
    refund = services.refund_request(
        payment_id=made["card_2_days"].id,
        actor=Actor.staff(make_staff(Role.REFUND_MANAGER, practice=practice)),
        amount="25.00",
        reason_code="billing_error",
    ).refund
    services.refund_complete(refund_id=refund.id, actor=provider_actor)
    _started(made["card_today"], days_ago=0, seconds_to_capture=30)
    _started(made["link_today"], days_ago=0, seconds_to_capture=90)
    _started(made["failed_today"], days_ago=0)
    _started(made["card_2_days"], days_ago=2, seconds_to_capture=600)
    _started(made["elsewhere"], days_ago=1, seconds_to_capture=5)
    _started(made["too_old"], days_ago=30, seconds_to_capture=5)  # the day before the window
    return made


@pytest.fixture
def site_reception(practice, site):
    return make_staff(Role.RECEPTION, practice=practice, sites=[site])


def test_dashboard_days_rates_speed_and_method_mix(site_reception, mine):
    board = selectors.dashboard_for(site_reception)

    assert board.days == 30 and len(board.daily) == 30
    assert board.since == timezone.now().astimezone(UTC).date() - timedelta(days=29)
    today, two_days_ago = board.daily[-1], board.daily[-3]
    assert (today.payments, today.paid, today.failed) == (3, 2, 1)
    assert today.collected == Decimal("100.00") and today.failure_rate == pytest.approx(1 / 3)
    assert today.median_seconds_to_capture == pytest.approx(60.0)  # median of 30 s and 90 s
    assert two_days_ago.collected == Decimal("100.00") and two_days_ago.refund_rate == 0.25
    assert board.daily[-2].payments == 0  # the other site's payment is not this person's
    assert board.daily[-2].failure_rate is None and board.daily[-2].refund_rate is None
    assert board.collected == Decimal("200.00") and board.refunded == Decimal("25.00")
    assert board.failure_rate == pytest.approx(1 / 4) and board.refund_rate == 0.125
    assert board.median_seconds_to_capture == pytest.approx(90.0)  # of 30, 90 and 600 s
    assert [(m.label, m.count, m.total, m.share) for m in board.method_mix] == [
        ("Card terminal", 2, Decimal("180.00"), 0.9),
        ("Pay-by-link", 1, Decimal("20.00"), 0.1),
    ]


def test_the_whole_practice_sees_every_site(reception, mine):
    board = selectors.dashboard_for(reception)  # all sites
    assert board.collected == Decimal("700.00") and board.daily[-2].collected == Decimal("500")


def test_charts_geometry_and_text_alternatives(site_reception, mine):
    found = {c.id: c for c in charts.dashboard_charts(selectors.dashboard_for(site_reception))}

    assert list(found) == [
        "chart-collected",
        "chart-paid",
        "chart-speed",
        "chart-failure",
        "chart-refund",
        "chart-mix",
    ]
    collected = found["chart-collected"]
    assert len(collected.marks) == 30 and collected.rows[-1][1] == "£100.00"
    assert "£200.00 collected from" in collected.summary
    assert [t.label for t in collected.y_ticks] == ["£0", "£50", "£100"]
    assert collected.x_ticks[-1].anchor == "end" and collected.x_ticks[-1].position <= 480
    tallest = max(collected.marks, key=lambda m: m.height)
    assert tallest.height == charts.PLOT_H and tallest.y == charts.TOP
    assert collected.marks[0].height == 0  # nothing that day
    speed = found["chart-speed"]
    assert [t.label for t in speed.y_ticks] == ["0 s", "5 min", "10 min"]
    assert speed.rows[-1][1] == "60 s" and speed.rows[-3][1] == "10 min"
    failure = found["chart-failure"]
    assert failure.rows[-1] == (failure.rows[-1][0], "33.3%")
    assert failure.rows[-2][1] == "no finished attempt"
    # Only days with finished attempts have a point; the day between breaks the line.
    assert len(failure.marks) == 2 and len(failure.lines) == 2
    mix = found["chart-mix"]
    assert [m.label for m in mix.marks] == ["Card terminal", "Pay-by-link"]
    assert mix.rows == [
        ("Card terminal", "2", "£180.00", "90.0%"),
        ("Pay-by-link", "1", "£20.00", "10.0%"),
    ]
    assert mix.summary == "Card terminal 90.0%; Pay-by-link 10.0%."


def test_overview_page_draws_accessible_charts(client, site_reception, mine):
    client.force_login(site_reception)
    page = client.get("/").content.decode()
    svgs = re.findall(r'<svg [^>]*role="img" aria-labelledby="([^"]+)"', page)
    assert len(svgs) == 6
    for labelled_by in svgs:
        for ref in labelled_by.split():
            assert f'id="{ref}"' in page
    assert page.count("<details>") == 6 and "Show the numbers" in page
    assert "Pay-by-link" in page and "pay_by_link" not in page


def test_overview_queries_do_not_grow_with_payments(
    client, site_reception, practice, site, patient, terminal, reception_actor, provider_actor
):
    client.force_login(site_reception)
    client.get("/")

    def count_queries():
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/").status_code == 200
        return len(queries)

    few = count_queries()
    for n in range(12):
        payment = captured(
            reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="5"
        )
        _started(payment, days_ago=n, seconds_to_capture=n)
    assert count_queries() == few


# --- exception banners ----------------------------------------------------------------------


def test_banner_counts_exactly_what_its_link_lists(client, reception, practice, site, patient):
    actor = Actor.staff(reception)
    window_start = selectors.exception_window_start()
    first_day = _failed(actor, practice, site, patient, target_id="INV-FIRST")
    _started(first_day, days_ago=30, at=time(0, 30))
    day_before = _failed(actor, practice, site, patient, target_id="INV-BEFORE")
    _started(day_before, days_ago=31, at=time(23, 30))
    recent = _failed(actor, practice, site, patient, target_id="INV-RECENT")
    assert window_start == timezone.now().astimezone(UTC).date() - timedelta(days=30)

    client.force_login(reception)
    page = client.get("/").content.decode()

    assert "Failed payments: 2." in page
    link = re.search(r'href="(/payments/\?exception=failed&amp;date_from=[0-9-]+)"', page)
    assert link and f"date_from={window_start.isoformat()}" in link.group(1)
    listed = client.get(link.group(1).replace("&amp;", "&")).content.decode()
    ids = set(re.findall(r"/payments/([0-9a-f-]{36})/", listed))
    assert ids == {str(first_day.id), str(recent.id)}


# --- patients' badges -----------------------------------------------------------------------


def test_patients_show_payment_badges_from_what_the_person_may_see(
    client,
    practice,
    site,
    other_site,
    terminal,
    reception_actor,
    provider_actor,
    settings,
    django_assert_max_num_queries,
):
    settings.PUBLIC_BASE_URL = "http://testserver"
    troubled = PatientFactory(practice=practice, display_name="Alice Troubled")
    owing = PatientFactory(practice=practice, display_name="Bob Owing")
    PatientFactory(practice=practice, display_name="Cara Quiet")
    elsewhere = PatientFactory(practice=practice, display_name="Dan Elsewhere")
    _failed(reception_actor, practice, site, troubled)
    retried = _failed(reception_actor, practice, site, troubled)
    services.payment_retry(payment_id=retried.id, actor=reception_actor)
    disputed = captured(
        reception_actor, provider_actor, practice, site, troubled, terminal=terminal
    )
    payment_flag_dispute(payment_id=disputed.id, actor=provider_actor, reason="Chargeback")
    flows.pay_by_link_issue(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=owing,
        target_type=TargetType.INVOICE,
        target_id="INV-OWED",
        amount="64.50",
    )
    _failed(reception_actor, practice, other_site, elsewhere)

    client.force_login(make_staff(Role.RECEPTION, practice=practice, sites=[site]))
    with django_assert_max_num_queries(10):
        page = client.get("/patients/").content.decode()

    rows = {
        name: re.search(rf"<tr><td>{name}.*?</tr>", page, re.S).group(0)
        for name in ("Alice Troubled", "Bob Owing", "Cara Quiet", "Dan Elsewhere")
    }
    assert "Disputed" in rows["Alice Troubled"] and "Failed payment" in rows["Alice Troubled"]
    assert "Outstanding" not in rows["Alice Troubled"]
    assert "Last: Captured" in rows["Alice Troubled"]  # the disputed one, newest
    assert "Outstanding £64.50" in rows["Bob Owing"] and "Payment in progress" in rows["Bob Owing"]
    assert "Last: Awaiting customer action" in rows["Bob Owing"]
    assert "Failed payment" not in rows["Bob Owing"]
    assert "No payments" in rows["Cara Quiet"] and 'class="badge ' not in rows["Cara Quiet"]
    # Dan's failed payment is at a site this person does not see.
    assert "No payments" in rows["Dan Elsewhere"] and "Failed" not in rows["Dan Elsewhere"]
