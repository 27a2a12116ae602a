"""Each simulator scenario, sent over real HTTP to our running app, ends in the right state.

The simulator publishes the scenario's payment, mandate and payout to the API
simulator and posts the signed webhook to `live_server`; our handler resolves
the unknown payment through the read-only API. Each scenario is checked for
the surfaced state, the audit trail (with the PaymentMandateRef) and the
outbox rows it must, and must not, write.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, WebhookEvent
from integrations.relay import relay_due
from integrations.simulators import gocardless
from subscriptions.events import FAILED_TASK_TYPE, MANDATE_TASK_TYPE
from subscriptions.models import SubscriptionMandate, SubscriptionPayment
from tests.subscriptions.conftest import (
    SECRET,
    WEBHOOK_PATH,
    gocardless_events,
    metadata_for,
    outbox,
)

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]

PAYMENT_SCENARIOS = {
    # scenario: (module, gocardless status, surfaced state, outbox (destination, type) rows)
    "payment_confirmed": (
        "care_plan",
        "confirmed",
        "paid",
        {
            (Destination.FINANCIAL_INSIGHTS, "subscription.payment.received"),
            (Destination.CARE_PLAN, "subscription.payment.received"),
        },
    ),
    "payment_paid_out": (
        "hygiene",
        "paid_out",
        "paid",
        {
            (Destination.FINANCIAL_INSIGHTS, "subscription.payment.received"),
            (Destination.HYGIENE, "subscription.payment.received"),
            (Destination.PMS, "subscription.payment.paid_out"),
        },
    ),
    "payment_failed": (
        "care_plan",
        "failed",
        "failed",
        {
            (Destination.FINANCIAL_INSIGHTS, "subscription.payment.failed"),
            (Destination.CARE_PLAN, "subscription.payment.failed"),
            (Destination.TASK_MANAGER, "task.create"),
        },
    ),
    "payment_charged_back": (
        "hygiene",
        "charged_back",
        "failed",
        {
            (Destination.FINANCIAL_INSIGHTS, "subscription.payment.failed"),
            (Destination.HYGIENE, "subscription.payment.failed"),
            (Destination.TASK_MANAGER, "task.create"),
        },
    ),
}


def _send(name, live_server, gc_api, practice, patient, module, **options):
    return gocardless.send_scenario(
        name,
        url=f"{live_server.url}{WEBHOOK_PATH}",
        secret=SECRET,
        api_url=gc_api,
        mandate_ref=f"PMREF-{name.upper()}",
        mandate_metadata=metadata_for(practice, patient, module),
        payment_metadata={"subscription_id": f"SUB-{module}-7"},
        **options,
    )


@pytest.mark.parametrize("name", sorted(PAYMENT_SCENARIOS))
def test_payment_scenario(name, live_server, gc_api, practice, patient):
    module, status, state, expected_rows = PAYMENT_SCENARIOS[name]

    built, delivery = _send(name, live_server, gc_api, practice, patient, module, amount=5000)

    assert delivery.status_code == 200
    assert {e.status for e in gocardless_events()} == {WebhookEvent.Status.PROCESSED}
    payment = SubscriptionPayment.objects.get()
    payment_id = built.events[0]["links"]["payment"]
    assert payment.gocardless_payment_id == payment_id
    assert (payment.gocardless_status, payment.state) == (status, state)
    assert payment.mandate_reference == f"PMREF-{name.upper()}"
    assert (payment.practice_id, payment.patient_id, payment.module) == (
        practice.id,
        patient.id,
        module,
    )
    assert (payment.amount, payment.currency) == (Decimal("50.00"), "GBP")
    assert payment.subscription_id == f"SUB-{module}-7"
    assert {(m.destination, m.event_type) for m in outbox()} == expected_rows
    audits = list(
        AuditEvent.objects.filter(event_type=EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED)
    )
    assert audits and {a.mandate_reference for a in audits} == {payment.mandate_reference}
    registered = next(
        a
        for a in audits
        if a.subject_type == "subscription_payment" and a.payload["change"] == "registered"
    )
    assert (registered.from_state, registered.to_state) == ("", state)
    assert registered.provider_reference == payment_id
    assert registered.amount == Decimal("50.00")
    assert registered.target_type == "subscription"


def test_a_payment_signal_carries_what_financial_insights_needs(
    live_server, gc_api, practice, patient
):
    _send("payment_failed", live_server, gc_api, practice, patient, "care_plan")

    payment = SubscriptionPayment.objects.get()
    [signal] = outbox(Destination.FINANCIAL_INSIGHTS)
    payload = signal.payload
    assert signal.event_type == "subscription.payment.failed"
    assert payload["practice_id"] == str(practice.id)
    assert payload["patient_id"] == str(patient.id)
    assert payload["billable_target"] == {
        "type": "subscription",
        "id": "SUB-care_plan-7",
        "pms_invoice_ref": None,
    }
    assert (payload["amount"], payload["currency"]) == ("50.00", "GBP")
    assert payload["payment_mandate_ref"] == payment.mandate_reference
    assert payload["gocardless_payment_id"] == payment.gocardless_payment_id
    assert payload["details"]["reason_code"] == "ARUDD-0"


def test_a_failed_payment_is_surfaced_at_once(live_server, gc_api, practice, patient):
    _send("payment_failed", live_server, gc_api, practice, patient, "hygiene")

    payment = SubscriptionPayment.objects.get()
    [module_event] = outbox(Destination.HYGIENE)
    [task] = outbox(Destination.TASK_MANAGER)
    assert module_event.event_type == "subscription.payment.failed"
    assert module_event.payload["subscription_payment_id"] == str(payment.id)
    assert module_event.next_attempt_at <= module_event.occurred_at  # due immediately
    assert task.payload["task_type"] == FAILED_TASK_TYPE
    assert task.payload["reason_code"] == "ARUDD-0"
    assert task.payload["subscription_payment"]["payment_mandate_ref"] == payment.mandate_reference
    assert outbox(Destination.CARE_PLAN) == []
    assert (payment.failure_cause, payment.failure_reason_code) == (
        "insufficient_funds",
        "ARUDD-0",
    )


@pytest.mark.parametrize(
    ("name", "status", "state"),
    [
        ("mandate_active", "active", "active_mandate"),
        ("mandate_cancelled", "cancelled", "cancelled"),
    ],
)
def test_mandate_scenario(name, status, state, live_server, gc_api, practice, patient):
    built, delivery = _send(name, live_server, gc_api, practice, patient, "care_plan")

    assert delivery.status_code == 200
    mandate = SubscriptionMandate.objects.get()
    assert mandate.gocardless_mandate_id == built.events[0]["links"]["mandate"]
    assert (mandate.gocardless_status, mandate.state) == (status, state)
    assert mandate.mandate_reference == f"PMREF-{name.upper()}"
    assert SubscriptionPayment.objects.count() == 0
    [audit] = AuditEvent.objects.filter(subject_type="subscription_mandate")
    assert (audit.to_state, audit.mandate_reference) == (state, mandate.mandate_reference)
    assert audit.provider_reference == mandate.gocardless_mandate_id


def test_an_active_mandate_signals_nothing(live_server, gc_api, practice, patient):
    _send("mandate_active", live_server, gc_api, practice, patient, "care_plan")

    assert SubscriptionMandate.objects.get().state == "active_mandate"
    assert outbox() == []


@pytest.mark.parametrize(
    ("name", "module", "status"),
    [
        ("mandate_failed", "care_plan", "failed"),
        ("mandate_blocked", "hygiene", "blocked"),
        ("mandate_cancelled", "care_plan", "cancelled"),
        ("mandate_expired", "hygiene", "expired"),
    ],
)
def test_a_mandate_that_stops_tells_its_module_and_tasks_the_practice(
    name, module, status, live_server, gc_api, practice, patient
):
    active, _ = _send("mandate_active", live_server, gc_api, practice, patient, module)
    mandate_id = active.events[0]["links"]["mandate"]

    stopped, delivery = gocardless.send_scenario(
        name,
        url=f"{live_server.url}{WEBHOOK_PATH}",
        secret=SECRET,
        mandate_id=mandate_id,
        mandate_ref="PMREF-MANDATE_ACTIVE",
    )

    assert delivery.status_code == 200
    mandate = SubscriptionMandate.objects.get()
    assert mandate.gocardless_status == status
    rows = outbox()
    assert {(m.destination, m.event_type) for m in rows} == {
        (module, f"subscription.mandate.{status}"),
        (Destination.TASK_MANAGER, "task.create"),
    }
    signal = next(m for m in rows if m.destination == module)
    assert signal.practice_id == practice.id
    assert signal.payload["payment_mandate_ref"] == "PMREF-MANDATE_ACTIVE"
    assert signal.payload["gocardless_mandate_id"] == mandate_id
    assert signal.payload["subscription_module"] == module
    assert (signal.payload["gocardless_status_from"], signal.payload["gocardless_status"]) == (
        "active",
        status,
    )
    assert signal.payload["gocardless_event_id"] == stopped.events[0]["id"]
    assert signal.payload["details"]["cause"] == stopped.events[0]["details"]["cause"]
    task = next(m for m in rows if m.destination == Destination.TASK_MANAGER)
    assert task.payload["task_type"] == MANDATE_TASK_TYPE
    assert task.payload["subscription_mandate"] == signal.payload
    assert "PMREF-MANDATE_ACTIVE" in task.payload["title"]
    # The signals were written with the status change: its audit event is in the same commit.
    change = AuditEvent.objects.get(
        subject_type="subscription_mandate", payload__change="status", to_state=mandate.state
    )
    assert change.payload["gocardless_event_id"] == stopped.events[0]["id"]

    again = gocardless.send_webhook(
        f"{live_server.url}{WEBHOOK_PATH}", stopped.events, secret=SECRET
    )
    assert again.status_code == 200 and len(outbox()) == 2  # a redelivery signals nothing new


def test_a_mandate_first_heard_of_as_failed_is_signalled_once(
    live_server, gc_api, practice, patient
):
    built, _ = _send("mandate_failed", live_server, gc_api, practice, patient, "hygiene")

    assert SubscriptionMandate.objects.get().gocardless_status == "failed"
    assert sorted((m.destination, m.event_type) for m in outbox()) == [
        (Destination.HYGIENE, "subscription.mandate.failed"),
        (Destination.TASK_MANAGER, "task.create"),
    ]
    [signal] = outbox(Destination.HYGIENE)
    assert signal.payload["gocardless_status_from"] is None
    assert signal.payload["gocardless_event_id"] == built.events[0]["id"]


def test_a_known_mandate_moves_from_active_to_cancelled(live_server, gc_api, practice, patient):
    active, _ = _send("mandate_active", live_server, gc_api, practice, patient, "care_plan")
    mandate_id = active.events[0]["links"]["mandate"]

    cancelled, delivery = gocardless.send_scenario(
        "mandate_cancelled",
        url=f"{live_server.url}{WEBHOOK_PATH}",
        secret=SECRET,
        mandate_id=mandate_id,
        mandate_ref="PMREF-MANDATE_ACTIVE",
    )

    assert delivery.status_code == 200
    mandate = SubscriptionMandate.objects.get()
    assert mandate.state == "cancelled"
    assert mandate.last_event_id == cancelled.events[0]["id"]
    transitions = [
        (a.from_state, a.to_state)
        for a in AuditEvent.objects.filter(subject_type="subscription_mandate").order_by("seq")
    ]
    assert transitions == [("", "active_mandate"), ("active_mandate", "cancelled")]


def test_a_failure_reaches_its_module_in_the_first_relay_pass(
    live_server, gc_api, practice, patient, relay_settings, sink
):
    _send("payment_failed", live_server, gc_api, practice, patient, "care_plan")

    relay_due()

    delivered = {r.path: r for r in sink.stored.values()}
    assert set(delivered) == {"/care_plan", "/financial_insights", "/task_manager"}
    assert all(r.signature_valid for r in delivered.values())
    module_message = delivered["/care_plan"].document
    assert module_message["type"] == "subscription.payment.failed"
    assert module_message["payload"]["payment_mandate_ref"] == "PMREF-PAYMENT_FAILED"
    assert delivered["/task_manager"].document["payload"]["task_type"] == FAILED_TASK_TYPE


def test_the_simulator_command_line_drives_our_app(live_server, gc_api, practice, patient):
    meta = metadata_for(practice, patient, "hygiene")
    result = subprocess.run(
        [
            sys.executable, "-m", "integrations.simulators.gocardless", "send", "payment_failed",
            "--url", f"{live_server.url}{WEBHOOK_PATH}", "--api-url", gc_api,
            "--payment-id", "PM0000CLITEST", "--mandate-ref", "PMREF-CLI",
            "--mandate-metadata", *[f"{k}={v}" for k, v in meta.items()],
            "--payment-metadata", "subscription_id=HY-CLI-1",
        ],
        cwd=ROOT, env={**os.environ, "GOCARDLESS_WEBHOOK_SECRET": SECRET},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "-> 200" in result.stdout
    payment = SubscriptionPayment.objects.get()
    assert (payment.gocardless_payment_id, payment.state) == ("PM0000CLITEST", "failed")
    assert (payment.mandate_reference, payment.subscription_id) == ("PMREF-CLI", "HY-CLI-1")
    assert [m.event_type for m in outbox(Destination.HYGIENE)] == ["subscription.payment.failed"]
