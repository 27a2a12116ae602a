"""Terminal payments through axept Connect, live: the simulator calls our real webhook receiver."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

import pytest

from integrations.dna import janitor
from integrations.dna.client import DnaClient
from integrations.dna.types import TerminalSaleRequest
from integrations.models import Destination, OutboxMessage, WebhookEvent
from payments import flows
from payments.models import Payment, PaymentState, ProviderOperation, TargetType
from tests.providers.conftest import has_card_number

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState
TID = "TIDPROV01"


def _start(actor, practice, site, patient, terminal, amount="85.00"):
    payment = flows.terminal_payment_start(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-9001",
        amount=amount,
        terminal=terminal,
    )
    return Payment.objects.get(pk=payment.pk)


def _rows(payment, destination, event_type):
    return OutboxMessage.objects.filter(
        payment_id=payment.id, destination=destination, event_type=event_type
    )


def test_terminal_payment_is_captured_when_the_patient_taps(
    live, live_server, reception_actor, practice, site, patient, sim_terminal
):
    payment = _start(reception_actor, practice, site, patient, sim_terminal)

    assert payment.state == S.AWAITING_CUSTOMER_ACTION
    [sale] = [r for r in live.requests("/axept/transaction") if r["method"] == "POST"]
    assert sale["body"]["uti"] == str(payment.id)
    assert sale["body"]["reference"] == payment.id.hex
    assert re.fullmatch(r"[A-Za-z0-9]{1,50}", sale["body"]["reference"])
    assert sale["body"]["webHookUrl"] == f"{live_server.url}/webhooks/dna/terminal/"
    assert sale["body"]["tid"] == TID and sale["body"]["amount"] == 85
    assert sale["headers"]["idempotency-key"] == f"pay:{payment.id}:terminal_sale"

    result = live.terminal(TID, "approve")

    assert result["delivery"]["status_code"] == 200
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    assert payment.captured_amount == Decimal("85.00")
    [delivery] = live.deliveries()
    assert payment.provider_reference == delivery["body"]["transactionId"]
    event = WebhookEvent.objects.get(provider="dna_terminal")
    assert event.status == WebhookEvent.Status.PROCESSED and event.payment_id == payment.id
    assert event.event_id == f"{payment.id}:approved"
    assert "cardPanStarred" not in event.body and not has_card_number(event.body)
    assert _rows(payment, Destination.PMS, "payment.captured").count() == 1
    op = ProviderOperation.objects.get(payment=payment)
    assert (op.operation, op.status, op.attempts) == ("terminal_sale", "succeeded", 1)


def test_a_declined_card_fails_the_payment_and_tasks_staff(
    live, reception_actor, practice, site, patient, sim_terminal
):
    payment = _start(reception_actor, practice, site, patient, sim_terminal)

    live.terminal(TID, "decline")

    payment.refresh_from_db()
    assert payment.state == S.FAILED and payment.failure_code == "declined"
    task = _rows(payment, Destination.TASK_MANAGER, "task.create").get()
    assert task.payload["task_type"] == "payment_failed"
    assert not _rows(payment, Destination.PMS, "payment.captured").exists()


def test_cancel_on_the_terminal_fails_as_customer_cancelled(
    live, reception_actor, practice, site, patient, sim_terminal
):
    payment = _start(reception_actor, practice, site, patient, sim_terminal)

    live.terminal(TID, "cancel")

    payment.refresh_from_db()
    assert payment.state == S.FAILED and payment.failure_code == "customer_cancelled"
    assert payment.provider_reference == ""


def test_a_terminal_timeout_arrives_by_webhook_and_fails_the_payment(
    live, reception_actor, practice, site, patient, sim_terminal
):
    payment = _start(reception_actor, practice, site, patient, sim_terminal)

    result = live.terminal(TID, "timeout")

    assert result["delivery"]["status_code"] == 200
    payment.refresh_from_db()
    assert payment.state == S.FAILED and payment.failure_code == "provider_timeout"
    assert payment.provider_reference == ""
    assert _rows(payment, Destination.TASK_MANAGER, "task.create").count() == 1


def test_a_timeout_whose_webhook_is_lost_is_found_by_the_janitor_and_can_be_retried(
    live, reception_actor, practice, site, patient, sim_terminal
):
    payment = _start(reception_actor, practice, site, patient, sim_terminal)
    live.terminal(TID, "timeout", webhook=False)  # nothing reaches us
    payment.refresh_from_db()
    assert payment.state == S.AWAITING_CUSTOMER_ACTION

    janitor.run()

    payment.refresh_from_db()
    assert payment.state == S.FAILED and payment.failure_code == "provider_timeout"
    assert live.count(f"/axept/transaction/{payment.id}", "GET") == 1
    assert _rows(payment, Destination.TASK_MANAGER, "task.create").count() == 1

    retry = flows.terminal_payment_retry(payment_id=payment.id, actor=reception_actor)
    retry.refresh_from_db()
    assert retry.retry_of_id == payment.id and retry.state == S.AWAITING_CUSTOMER_ACTION
    live.terminal(TID, "approve")
    retry.refresh_from_db()
    assert retry.state == S.CAPTURED


def test_a_send_that_gets_a_500_is_not_guessed_and_the_janitor_resolves_it(
    live, reception_actor, practice, site, patient, sim_terminal
):
    live.fault("/axept/transaction", "500", method="POST")

    payment = _start(reception_actor, practice, site, patient, sim_terminal)

    assert payment.state == S.INITIATED  # unknown: not failed, not awaiting
    op = ProviderOperation.objects.get(payment=payment)
    assert op.status == "pending" and op.last_error

    janitor.run()

    payment.refresh_from_db()
    op.refresh_from_db()
    assert payment.state == S.FAILED and payment.failure_code == "provider_unavailable"
    assert op.status == "failed" and op.attempts == 2
    # Asked, never sent again: a resend could surprise a patient who has left.
    assert live.count("/axept/transaction", "POST") == 1
    assert live.count(f"/axept/transaction/{payment.id}", "GET") == 1


def test_a_send_that_never_reached_dna_fails_once_dna_confirms_it(
    live, reception_actor, practice, site, patient, sim_terminal
):
    live.fault("/axept/auth", "500", count=2)  # no token: the sale is never sent

    payment = _start(reception_actor, practice, site, patient, sim_terminal)
    assert payment.state == S.INITIATED
    assert live.count("/axept/transaction", "POST") == 0

    janitor.run()  # asks: DNA has no such uti, so nothing happened

    payment.refresh_from_db()
    assert payment.state == S.FAILED and payment.failure_code == "provider_unavailable"


def test_a_send_whose_answer_was_lost_is_found_pending_and_completes(
    live, reception_actor, practice, site, patient, sim_terminal
):
    live.fault("/axept/transaction", "drop", method="POST")
    payment = _start(reception_actor, practice, site, patient, sim_terminal)
    assert payment.state == S.INITIATED
    # What DNA saw is the question: here the terminal did get the sale (sent as our
    # client would send it again), but we never heard back.
    sale = next(r for r in live.requests("/axept/transaction") if r["method"] == "POST")["body"]
    with DnaClient() as client:
        client.terminal_sale(
            TerminalSaleRequest(
                uti=sale["uti"],
                tid=sale["tid"],
                amount=Decimal(str(sale["amount"])),
                currency=sale["currency"],
                reference=sale["reference"],
                webhook_url=sale["webHookUrl"],
                expires_at=datetime.fromisoformat(sale["expirationDate"].replace("Z", "+00:00")),
            ),
            idempotency_key="test-replay-of-the-lost-send",
        )

    janitor.run()

    payment.refresh_from_db()
    assert payment.state == S.AWAITING_CUSTOMER_ACTION
    live.terminal(TID, "approve")
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    assert ProviderOperation.objects.get(payment=payment).status == "succeeded"


def test_a_busy_terminal_refuses_and_the_payment_fails_with_the_reason(
    live, reception_actor, practice, site, patient, sim_terminal
):
    first = _start(reception_actor, practice, site, patient, sim_terminal)

    second = _start(reception_actor, practice, site, patient, sim_terminal, amount="10.00")

    assert first.state == S.AWAITING_CUSTOMER_ACTION
    assert second.state == S.FAILED and second.failure_code == "terminal_busy"
    assert "busy" in second.failure_reason


def test_janitor_leaves_a_payment_still_on_the_terminal_alone(
    live, reception_actor, practice, site, patient, sim_terminal
):
    payment = _start(reception_actor, practice, site, patient, sim_terminal)

    janitor.run()

    payment.refresh_from_db()
    assert payment.state == S.AWAITING_CUSTOMER_ACTION
    assert live.count(f"/axept/transaction/{payment.id}", "GET") == 1


def test_a_lost_terminal_webhook_is_found_by_the_janitor(
    dna, reception_actor, practice, site, patient, sim_terminal
):
    """PUBLIC_BASE_URL is unreachable here: the approval never reaches us by webhook."""
    payment = _start(reception_actor, practice, site, patient, sim_terminal)
    result = dna.terminal(TID, "approve")
    assert result["delivery"]["status_code"] is None

    janitor.run()

    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    assert payment.provider_reference == result["result"]["transactionId"]
