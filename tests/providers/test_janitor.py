"""The janitor's queue: payments waiting by design never starve a stuck one; a slow DNA never
stops a pass. DNA is the simulator; callbacks are lost because PUBLIC_BASE_URL is unreachable."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from audit.actors import Actor
from integrations.dna import janitor
from payments import flows
from payments.models import Payment, PaymentState, TargetType
from tests.providers.conftest import pay_on_hosted_page

pytestmark = pytest.mark.django_db

S = PaymentState


def _link(actor, practice, site, patient, n: int) -> Payment:
    """A pay-by-link payment whose link is still active: it waits for the patient by design."""
    issued = flows.pay_by_link_issue(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=f"INV-LINK-{n}",
        amount="20.00",
    )
    return issued.link.payment


def _paid_but_unheard_of(http, practice, site, patient, amount="60.00", target="INV-STUCK"):
    """Paid on DNA's page; DNA's callback never reaches us."""
    session = flows.online_checkout_start(
        actor=Actor.for_patient(patient),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id=target,
        amount=amount,
        return_url="https://app.example/return",
    )
    pay_on_hosted_page(http, session.redirect_url)
    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.AWAITING_CUSTOMER_ACTION
    return payment


def test_a_newer_stuck_payment_is_resolved_while_older_ones_wait_by_design(
    dna, http, settings, reception_actor, practice, site, patient
):
    settings.DNA_JANITOR_BATCH = 3
    waiting = [_link(reception_actor, practice, site, patient, n) for n in range(5)]
    before = {p.pk: p.updated_at for p in Payment.objects.filter(pk__in=[p.pk for p in waiting])}
    stuck = _paid_but_unheard_of(http, practice, site, patient)

    first = janitor.run()
    second = janitor.run()
    third = janitor.run()

    stuck.refresh_from_db()
    assert stuck.state == S.CAPTURED
    assert (first.asked, second.asked, third.asked) == (3, 3, 0)
    assert dna.count("/v2/transactions/", "GET") == 6  # each payment asked once
    for payment in Payment.objects.filter(pk__in=before):
        assert payment.state == S.AWAITING_CUSTOMER_ACTION
        assert payment.updated_at == before[payment.pk]  # a schedule is not a state change
        assert payment.next_check_at > stuck.captured_at + timedelta(minutes=50)  # an hour away
        assert payment.next_check_at <= payment.link.expires_at


def test_an_authorised_payment_awaiting_capture_is_asked_about_now_and_then(
    dna, http, settings, practice, site, patient
):
    settings.DNA_ONLINE_TRANSACTION_TYPE = "AUTH"
    payment = _paid_but_unheard_of(http, practice, site, patient)

    janitor.run()
    payment.refresh_from_db()
    assert payment.state == S.AUTHORISED
    asked = dna.count("/v2/transactions/", "GET")
    janitor.run()
    janitor.run()

    assert dna.count("/v2/transactions/", "GET") == asked  # not in every pass
    payment.refresh_from_db()
    due = payment.next_check_at
    assert timedelta(minutes=45) < due - payment.updated_at <= timedelta(hours=1)
    janitor.run(now=due)
    assert dna.count("/v2/transactions/", "GET") == asked + 1


def test_one_slow_dna_answer_does_not_hold_up_the_pass(
    dna, http, settings, practice, site, patient
):
    settings.DNA_LOOKUP_TIMEOUT_SECONDS = 0.5
    slow = _paid_but_unheard_of(http, practice, site, patient, target="INV-SLOW")
    fine = _paid_but_unheard_of(http, practice, site, patient, amount="25.00", target="INV-OK")
    dna.fault(f"/v2/transactions/{slow.id}", "timeout", seconds=5, method="GET")

    started = time.monotonic()
    stats = janitor.run()
    elapsed = time.monotonic() - started

    assert elapsed < 3.0
    assert stats.asked == 2 and not stats.deferred
    fine.refresh_from_db()
    slow.refresh_from_db()
    assert fine.state == S.CAPTURED
    assert slow.state == S.AWAITING_CUSTOMER_ACTION
    assert slow.next_check_at > slow.updated_at  # asked again later; the next pass skips it
    assert janitor.run().asked == 0


def test_a_pass_takes_no_payment_it_could_not_finish_within_its_budget(
    dna, http, settings, practice, site, patient
):
    settings.DNA_LOOKUP_TIMEOUT_SECONDS = 0.5
    settings.DNA_JANITOR_TIME_BUDGET_SECONDS = 1.0  # less than one look-up may take
    payment = _paid_but_unheard_of(http, practice, site, patient)

    stats = janitor.run()

    assert stats.deferred and stats.asked == 0
    assert dna.count("/v2/transactions/", "GET") == 0
    payment.refresh_from_db()
    assert payment.state == S.AWAITING_CUSTOMER_ACTION and payment.next_check_at is None
    settings.DNA_JANITOR_TIME_BUDGET_SECONDS = 60.0
    assert janitor.run().asked == 1
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
