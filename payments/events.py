"""Which outbound messages each payment outcome produces (§6.2) — decided here only.

Every function runs inside the service's transaction and writes outbox rows;
the relay delivers them. Financial Signals and PMS writebacks for one outcome
are written together, so the relay sends them in the same pass (§13.2.12).
"""

from __future__ import annotations

from integrations.models import Destination
from integrations.outbox import outbox_enqueue
from payments.models import Payment, PmsWritebackStatus, Refund, SplitPayment
from practices.models import PmsWritebackMode

SCHEMA_VERSION = 1


def _billable_target(payment: Payment | SplitPayment) -> dict:
    return {
        "type": payment.target_type,
        "id": payment.target_id,
        "pms_invoice_ref": payment.pms_invoice_ref or None,
    }


def payment_facts(payment: Payment) -> dict:
    """The common payload of every payment message. No card data, ever."""
    return {
        "payment_id": str(payment.id),
        "practice_id": str(payment.practice_id),
        "site_id": str(payment.site_id),
        "terminal_id": str(payment.terminal_id) if payment.terminal_id else None,
        "patient_id": str(payment.patient_id) if payment.patient_id else None,
        "billable_target": _billable_target(payment),
        "method": payment.method,
        "amount": str(payment.amount),
        "charged_amount": str(payment.charge_amount),
        "currency": payment.currency,
        "rewards_credit": (
            {
                "amount": str(payment.rewards_credit_applied),
                "reference": payment.rewards_credit_reference,
            }
            if payment.rewards_credit_applied
            else None
        ),
        "provider": payment.provider or None,
        "provider_reference": payment.provider_reference or None,
        "state": payment.state,
        "split_id": str(payment.split_id) if payment.split_id else None,
    }


def _enqueue(
    destination, event_type, payment: Payment, payload: dict, *, dedupe: str | None = None
):
    return outbox_enqueue(
        destination=destination,
        event_type=event_type,
        practice_id=payment.practice_id,
        payment_id=payment.id,
        payload=payload,
        schema_version=SCHEMA_VERSION,
        dedupe_key=dedupe,
    )


def _queue_pms_writeback(payment: Payment, event_type: str, payload: dict, dedupe: str) -> None:
    """PMS writeback: the adapter decides delivery; an unsupported PMS gets a fallback task."""
    _enqueue(Destination.PMS, event_type, payment, payload, dedupe=dedupe)
    payment.pms_writeback_status = PmsWritebackStatus.PENDING


def on_initiated(payment: Payment) -> None:
    """A PMS that accepts a pending marker hears about the payment before capture."""
    if (
        payment.practice.pms_writeback_mode == PmsWritebackMode.PENDING_MARKER
        and not payment.split_id
        and not payment.is_procurement
    ):
        _enqueue(
            Destination.PMS,
            "payment.pending",
            payment,
            payment_facts(payment),
            dedupe=f"pms:pending:{payment.id}",
        )


def on_captured(payment: Payment) -> None:
    if payment.is_procurement:
        # A supplier payment is the practice's, not a patient's: it is confirmed
        # to Inventory only (no PMS writeback, receipt or patient ledger entry).
        _supplier_payment_message(payment, "supplier_payment.executed")
        return
    facts = payment_facts(payment)
    facts["captured_amount"] = str(payment.captured_amount)
    facts["captured_at"] = payment.captured_at.isoformat()
    # One ledger entry per tender for Financial Insights.
    _enqueue(
        Destination.FINANCIAL_INSIGHTS,
        "payment.captured",
        payment,
        facts,
        dedupe=f"fi:captured:{payment.id}",
    )
    if payment.rewards_credit_applied:
        _enqueue(
            Destination.REWARDS_MANAGER,
            "rewards.redemption",
            payment,
            {
                "payment_id": str(payment.id),
                "patient_id": str(payment.patient_id),
                "practice_id": str(payment.practice_id),
                "amount": str(payment.rewards_credit_applied),
                "redemption_reference": payment.rewards_credit_reference,
            },
            dedupe=f"rewards:redeem:{payment.id}",
        )
    if payment.split_id is None:
        _queue_pms_writeback(
            payment, "payment.captured", facts, dedupe=f"pms:captured:{payment.id}"
        )
        _queue_receipt(payment, facts)


RECEIPT_EVENT = "receipt.requested"
LINK_DELIVERY_EVENT = "payment_link.deliver"  # written by payments.flows.link_delivery_enqueue
RECEIPT_CHANNELS = ["app", "email", "sms"]  # app first, then fallbacks


def _queue_receipt(payment: Payment, facts: dict, *, kind: str = "payment") -> None:
    _enqueue(
        Destination.COMMUNICATION_HUB,
        RECEIPT_EVENT,
        payment,
        {**facts, "receipt_kind": kind, "channels": RECEIPT_CHANNELS},
    )


def _split_facts(split: SplitPayment, tenders: list[Payment]) -> dict:
    return {
        "split_id": str(split.id),
        "practice_id": str(split.practice_id),
        "site_id": str(split.site_id),
        "patient_id": str(split.patient_id),
        "billable_target": _billable_target(split),
        "amount": str(split.amount_due),
        "currency": split.currency,
        "tenders": [
            {
                "payment_id": str(t.id),
                "method": t.method,
                "amount": str(t.captured_amount),
                "provider_reference": t.provider_reference or None,
            }
            for t in tenders
        ],
        "settled_at": split.settled_at.isoformat(),
    }


def on_split_settled(split: SplitPayment, tenders: list[Payment]) -> None:
    """The target's single settled outcome: one writeback and one receipt for all tenders."""
    first = tenders[0]
    payload = _split_facts(split, tenders)
    outbox_enqueue(
        destination=Destination.PMS,
        event_type="split.settled",
        practice_id=split.practice_id,
        payment_id=first.id,
        payload=payload,
        dedupe_key=f"pms:split:{split.id}",
    )
    outbox_enqueue(
        destination=Destination.COMMUNICATION_HUB,
        event_type=RECEIPT_EVENT,
        practice_id=split.practice_id,
        payment_id=first.id,
        payload={**payload, "receipt_kind": "split", "channels": RECEIPT_CHANNELS},
        dedupe_key=f"receipt:split:{split.id}",
    )


def on_receipt_resend(payment: Payment, *, split_tenders: list[Payment] | None = None):
    """Staff asked to send a paid payment's receipt again: today's facts, marked `resend`.

    A split tender's receipt is the split's (all tenders, as first sent); a
    refunded payment's shows what was refunded so far.
    """
    if payment.split_id:
        payload = {**_split_facts(payment.split, split_tenders or []), "receipt_kind": "split"}
    else:
        payload = {
            **payment_facts(payment),
            "captured_amount": str(payment.captured_amount),
            "captured_at": payment.captured_at.isoformat() if payment.captured_at else None,
            "refunded_total": str(payment.refunded_amount),
            "receipt_kind": "payment",
        }
    return _enqueue(
        Destination.COMMUNICATION_HUB,
        RECEIPT_EVENT,
        payment,
        {**payload, "channels": RECEIPT_CHANNELS, "resend": True},
    )


def on_failed(payment: Payment) -> None:
    """Silent failures are prohibited (§13.2.6): every failure becomes a task."""
    facts = payment_facts(payment)
    if payment.is_procurement:
        _supplier_payment_message(payment, "supplier_payment.failed")
    _enqueue(
        Destination.TASK_MANAGER,
        "task.create",
        payment,
        {
            "task_type": "payment_failed",
            "title": f"Payment of {payment.currency} {payment.amount} failed",
            "detail": payment.failure_reason,
            "failure_code": payment.failure_code,
            "payment": facts,
        },
        dedupe=f"task:failed:{payment.id}",
    )


def on_refunded(payment: Payment, refund: Refund) -> None:
    if payment.is_procurement:
        _supplier_payment_message(
            payment,
            "supplier_payment.refunded",
            extra={"refund_id": str(refund.id), "refund_amount": str(refund.amount)},
            dedupe=f"inventory:refund:{refund.id}",
        )
        return
    facts = payment_facts(payment)
    event_type = "payment.refunded" if payment.state == "refunded" else "payment.partially_refunded"
    payload = {
        **facts,
        "refund_id": str(refund.id),
        "refund_amount": str(refund.amount),
        "refunded_total": str(payment.refunded_amount),
        "reason_code": refund.reason_code,
        "original_provider_reference": refund.original_provider_reference or None,
    }
    _enqueue(
        Destination.FINANCIAL_INSIGHTS,
        event_type,
        payment,
        payload,
        dedupe=f"fi:refund:{refund.id}",
    )
    _queue_pms_writeback(payment, "refund.completed", payload, dedupe=f"pms:refund:{refund.id}")
    _queue_receipt(payment, payload, kind="refund")


def on_refund_failed(payment: Payment, refund: Refund) -> None:
    """The provider refused a refund: the patient is still owed it, so someone must act (§13.2.6)."""
    _enqueue(
        Destination.TASK_MANAGER,
        "task.create",
        payment,
        {
            "task_type": "refund_failed",
            "title": f"Refund of {payment.currency} {refund.amount} failed",
            "detail": refund.failure_reason,
            "refund_id": str(refund.id),
            "refund_amount": str(refund.amount),
            "reason_code": refund.reason_code,
            "original_provider_reference": refund.original_provider_reference or None,
            "payment": payment_facts(payment),
        },
        dedupe=f"task:refund_failed:{refund.id}",
    )


def on_approval_required(approval) -> None:
    outbox_enqueue(
        destination=Destination.TASK_MANAGER,
        event_type="task.create",
        practice_id=approval.practice_id,
        payment_id=approval.payment_id,
        payload={
            "task_type": "approval_required",
            "title": f"Refund of {approval.amount} needs approval",
            "approval_id": str(approval.id),
            "payment_id": str(approval.payment_id),
            "amount": str(approval.amount),
            "reason_code": approval.reason_code,
            "expires_at": approval.expires_at.isoformat(),
        },
        dedupe_key=f"task:approval:{approval.id}",
    )


# --- Supplier payments, deposits, disputes, overdue balances -------------------


def _supplier_payment_message(
    payment: Payment, event_type: str, *, extra: dict | None = None, dedupe: str | None = None
) -> None:
    """Inventory & Compliance Manager hears the outcome of a supplier payment (§6.4)."""
    supplier = payment.supplier_payment
    _enqueue(
        Destination.INVENTORY,
        event_type,
        payment,
        {
            "payment_id": str(payment.id),
            "practice_id": str(payment.practice_id),
            "site_id": str(payment.site_id),
            "purchase_order_id": supplier.purchase_order_id,
            "supplier_invoice_id": supplier.supplier_invoice_id,
            "amount": str(payment.amount),
            "captured_amount": str(payment.captured_amount),
            "currency": payment.currency,
            "state": payment.state,
            "provider_reference": payment.provider_reference or None,
            "captured_at": payment.captured_at.isoformat() if payment.captured_at else None,
            "failure_code": payment.failure_code or None,
            **(extra or {}),
        },
        dedupe=dedupe or f"inventory:{event_type}:{payment.id}",
    )


def on_deposit_settled(deposit, *, override: bool = False, discriminator: str = "") -> None:
    """Financial Signal deposit.converted / deposit.forfeited (§6.2) when a deposit is settled."""
    event_type = f"deposit.{deposit.status}"
    payment = deposit.payment
    outbox_enqueue(
        destination=Destination.FINANCIAL_INSIGHTS,
        event_type=event_type,
        practice_id=deposit.practice_id,
        payment_id=deposit.payment_id,
        payload={
            "deposit_id": str(deposit.id),
            "practice_id": str(deposit.practice_id),
            "site_id": str(deposit.site_id),
            "patient_id": str(deposit.patient_id),
            "billable_target": {"type": "deposit", "id": str(deposit.id), "pms_invoice_ref": None},
            "appointment_id": deposit.appointment_id,
            "amount": str(deposit.amount),
            "currency": deposit.currency,
            "payment_id": str(deposit.payment_id) if deposit.payment_id else None,
            "provider_reference": (payment.provider_reference or None) if payment else None,
            "attendance_outcome": deposit.attendance_outcome or None,
            "override": override,
            "occurred_at": deposit.closed_at.isoformat() if deposit.closed_at else None,
        },
        schema_version=SCHEMA_VERSION,
        dedupe_key=f"fi:{event_type}:{deposit.id}{':' + discriminator if discriminator else ''}",
    )


def on_dispute_flagged(payment: Payment, *, reason: str, provider_reference: str) -> None:
    """A dispute or chargeback is an exception someone must work (§5.4): a task."""
    _enqueue(
        Destination.TASK_MANAGER,
        "task.create",
        payment,
        {
            "task_type": "payment_disputed",
            "title": f"Payment of {payment.currency} {payment.amount} is disputed",
            "detail": reason,
            "dispute_reference": provider_reference or None,
            "payment": payment_facts(payment),
        },
        dedupe=f"task:disputed:{payment.id}",
    )


def _balance_facts(balance) -> dict:
    return {
        "overdue_balance_id": str(balance.id),
        "practice_id": str(balance.practice_id),
        "site_id": str(balance.site_id),
        "patient_id": str(balance.patient_id),
        "billable_target": {"type": balance.target_type, "id": balance.target_id},
        "payment_id": str(balance.payment_id),
        "amount": str(balance.amount),
        "currency": balance.currency,
        "due_at": balance.due_at.isoformat(),
    }


REMINDER_EVENT = "payment_reminder.requested"


def on_overdue_reminder(balance, *, number: int, of: int, days_overdue: int) -> None:
    """Communication Hub sends the patient a reminder of an unpaid request (app first)."""
    outbox_enqueue(
        destination=Destination.COMMUNICATION_HUB,
        event_type=REMINDER_EVENT,
        practice_id=balance.practice_id,
        payment_id=balance.payment_id,
        payload={
            **_balance_facts(balance),
            "reminder_number": number,
            "reminders_scheduled": of,
            "days_overdue": days_overdue,
            "channels": ["app", "email", "sms"],
        },
        schema_version=SCHEMA_VERSION,
        dedupe_key=f"reminder:overdue:{balance.id}:{balance.due_at.timestamp():.0f}:{number}",
    )


def on_overdue_escalated(balance, *, days_overdue: int) -> None:
    """Reminders have run out: a person follows up (Task Manager)."""
    outbox_enqueue(
        destination=Destination.TASK_MANAGER,
        event_type="task.create",
        practice_id=balance.practice_id,
        payment_id=balance.payment_id,
        payload={
            **_balance_facts(balance),
            "task_type": "overdue_balance",
            "title": f"{balance.currency} {balance.amount} overdue by {days_overdue} days",
            "reminders_sent": balance.reminders_sent,
            "days_overdue": days_overdue,
        },
        schema_version=SCHEMA_VERSION,
        dedupe_key=f"task:overdue:{balance.id}:{balance.due_at.timestamp():.0f}",
    )
