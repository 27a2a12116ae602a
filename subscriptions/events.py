"""Which outbound messages each subscription payment outcome produces — decided here only.

Every function runs inside the service's transaction and writes outbox rows.
Signals only: nothing here (or anywhere) asks GoCardless to collect or retry.

- paid (from any other state): Financial Signal `subscription.payment.received`,
  and the same event to the owning module (Care Plan or Hygiene), which may
  lift a fulfilment gate.
- failed (from any other state): Financial Signal `subscription.payment.failed`,
  the same event to the owning module at once (it gates fulfilment, §13.2.10),
  and a Task Manager task `subscription_payment_failed` (§13.2.6).
- a mandate becomes failed, blocked, cancelled or expired (no collection can
  happen on it any more): `subscription.mandate.<status>` to the owning module
  and a Task Manager task `subscription_mandate_stopped`.
- paid with fees known: the PMS writeback `subscription.payment.paid_out`
  carrying `fees` (§13.2.13). It waits for the payout, because fees only
  exist once GoCardless pays the payment out: one writeback per payment, with
  its fees, rather than a paid writeback and a later fee correction the PMS
  contract has no kind for. An unsupported PMS turns it into a fallback task
  carrying the same `fees` (integrations/pms/services.py).

Signal de-duplication keys name the GoCardless event that caused them, so a
payment that fails, is resubmitted by its module and fails again is signalled
twice, while the same event processed twice can signal only once.
"""

from __future__ import annotations

from django.utils import timezone

from integrations.models import Destination
from integrations.outbox import outbox_enqueue
from subscriptions.lifecycle import SubscriptionModule, SubscriptionState
from subscriptions.models import SubscriptionMandate, SubscriptionPayment
from subscriptions.provider_events import GoCardlessEvent

SCHEMA_VERSION = 1
FAILED_TASK_TYPE = "subscription_payment_failed"
MANDATE_TASK_TYPE = "subscription_mandate_stopped"
# GoCardless mandate statuses after which the module can collect nothing on the mandate.
MANDATE_STOPPED_STATUSES = frozenset({"failed", "blocked", "cancelled", "expired"})
MODULE_DESTINATION = {
    SubscriptionModule.CARE_PLAN: Destination.CARE_PLAN,
    SubscriptionModule.HYGIENE: Destination.HYGIENE,
}


def billable_target(payment: SubscriptionPayment) -> dict:
    return {"type": "subscription", "id": payment.subscription_id, "pms_invoice_ref": None}


def payment_facts(payment: SubscriptionPayment) -> dict:
    """The common payload of every subscription payment message. No card or bank details."""
    return {
        "subscription_payment_id": str(payment.id),
        "practice_id": str(payment.practice_id),
        "site_id": str(payment.site_id) if payment.site_id else None,
        "patient_id": str(payment.patient_id),
        "subscription_module": payment.module,
        "billable_target": billable_target(payment),
        "amount": str(payment.amount),
        "currency": payment.currency,
        "payment_mandate_ref": payment.mandate_reference,
        "provider": "gocardless",
        "provider_reference": payment.gocardless_payment_id,
        "gocardless_payment_id": payment.gocardless_payment_id,
        "gocardless_mandate_id": payment.mandate.gocardless_mandate_id,
        "gocardless_subscription_id": payment.gocardless_subscription_id or None,
        "charge_date": payment.charge_date.isoformat() if payment.charge_date else None,
        "state": payment.state,
        "gocardless_status": payment.gocardless_status,
    }


def _outcome_payload(payment: SubscriptionPayment, event: GoCardlessEvent) -> dict:
    return {
        **payment_facts(payment),
        "gocardless_event_id": event.id,
        "gocardless_event": event.kind,
        "status_at": event.created_at.isoformat(),
        "details": event.details(),
    }


def _enqueue(
    destination,
    event_type: str,
    payment: SubscriptionPayment | SubscriptionMandate,
    payload: dict,
    dedupe: str,
):
    return outbox_enqueue(
        destination=destination,
        event_type=event_type,
        practice_id=payment.practice_id,
        payload=payload,
        schema_version=SCHEMA_VERSION,
        dedupe_key=dedupe,
    )


def on_state_changed(payment: SubscriptionPayment, *, from_state: str, event: GoCardlessEvent):
    """The signals of a surfaced state change, written with it."""
    if payment.state == from_state:
        return
    module_destination = MODULE_DESTINATION[payment.module]
    key = f"{payment.gocardless_payment_id}:{event.id}"
    if payment.state == SubscriptionState.PAID:
        payload = _outcome_payload(payment, event)
        _enqueue(
            Destination.FINANCIAL_INSIGHTS,
            "subscription.payment.received",
            payment,
            payload,
            f"fi:sub:received:{key}",
        )
        _enqueue(
            module_destination,
            "subscription.payment.received",
            payment,
            payload,
            f"module:sub:received:{key}",
        )
    elif payment.state == SubscriptionState.FAILED:
        payload = _outcome_payload(payment, event)
        # The owning module first: it gates fulfilment on this (§3.3 "without delay").
        _enqueue(
            module_destination,
            "subscription.payment.failed",
            payment,
            payload,
            f"module:sub:failed:{key}",
        )
        _enqueue(
            Destination.FINANCIAL_INSIGHTS,
            "subscription.payment.failed",
            payment,
            payload,
            f"fi:sub:failed:{key}",
        )
        module = SubscriptionModule(payment.module).label
        _enqueue(
            Destination.TASK_MANAGER,
            "task.create",
            payment,
            {
                "task_type": FAILED_TASK_TYPE,
                "title": f"{module}: Direct Debit of {payment.currency} {payment.amount} failed",
                "detail": event.description or event.cause,
                "failure_cause": event.cause or None,
                "reason_code": event.reason_code or None,
                "note": f"Collection and any retry belong to {module} via GoCardless; "
                "Integrated Payments does not collect or retry.",
                "subscription_payment": payload,
            },
            f"task:sub:failed:{key}",
        )


def mandate_facts(mandate: SubscriptionMandate) -> dict:
    """The common payload of every mandate message. No bank details."""
    return {
        "subscription_mandate_id": str(mandate.id),
        "practice_id": str(mandate.practice_id),
        "site_id": str(mandate.site_id) if mandate.site_id else None,
        "patient_id": str(mandate.patient_id),
        "subscription_module": mandate.module,
        "payment_mandate_ref": mandate.mandate_reference,
        "provider": "gocardless",
        "provider_reference": mandate.gocardless_mandate_id,
        "gocardless_mandate_id": mandate.gocardless_mandate_id,
        "state": mandate.state,
        "gocardless_status": mandate.gocardless_status,
    }


def on_mandate_status_changed(
    mandate: SubscriptionMandate, *, from_status: str, event: GoCardlessEvent
) -> None:
    """A mandate that can no longer be collected on: tell its module, and task the practice."""
    status = mandate.gocardless_status
    if status == from_status or status not in MANDATE_STOPPED_STATUSES:
        return
    payload = {
        **mandate_facts(mandate),
        "gocardless_status_from": from_status or None,
        "gocardless_event_id": event.id,
        "gocardless_event": event.kind,
        "status_at": event.created_at.isoformat(),
        "details": event.details(),
    }
    key = f"{mandate.gocardless_mandate_id}:{event.id}"
    _enqueue(
        MODULE_DESTINATION[mandate.module],
        f"subscription.mandate.{status}",
        mandate,
        payload,
        f"module:mandate:{status}:{key}",
    )
    module = SubscriptionModule(mandate.module).label
    _enqueue(
        Destination.TASK_MANAGER,
        "task.create",
        mandate,
        {
            "task_type": MANDATE_TASK_TYPE,
            "title": f"{module}: Direct Debit mandate {mandate.mandate_reference} {status}",
            "detail": event.description or event.cause,
            "failure_cause": event.cause or None,
            "reason_code": event.reason_code or None,
            "note": f"No payment can be collected on this mandate. A new mandate belongs to "
            f"{module} via GoCardless; Integrated Payments does not create mandates.",
            "subscription_mandate": payload,
        },
        f"task:mandate:{status}:{key}",
    )


def queue_pms_writeback(payment: SubscriptionPayment) -> bool:
    """Once a paid payment's fees are known: the PMS writeback with its fees, once per payout.

    Sets `pms_writeback_queued_at` on the (locked) record; the caller saves it.
    """
    if payment.state != SubscriptionState.PAID or not payment.has_fees:
        return False
    if payment.pms_writeback_queued_at is not None:
        return False
    payload = {
        **payment_facts(payment),
        "paid_out": True,
        "fees": fees_payload(payment),
    }
    _enqueue(
        Destination.PMS,
        "subscription.payment.paid_out",
        payment,
        payload,
        f"pms:sub:paid_out:{payment.gocardless_payment_id}:{payment.payout_id}",
    )
    payment.pms_writeback_queued_at = timezone.now()
    return True


def fees_payload(payment: SubscriptionPayment) -> dict | None:
    """The stored fees in the writeback's `fees` shape (docs/contracts.md)."""
    if not payment.has_fees:
        return None
    return {
        "payout_id": payment.payout_id,
        "currency": payment.fee_currency,
        "gocardless_fee": str(payment.fee_gocardless),
        "app_fee": str(payment.fee_app),
        "surcharge_fee": str(payment.fee_surcharge),
        "tax": str(payment.fee_tax),
        "total": str(payment.fee_total),
        "vat_included": True,
        "minor_units": payment.fees_minor,
    }
