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
        "patient_id": str(payment.patient_id),
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
    ):
        _enqueue(
            Destination.PMS,
            "payment.pending",
            payment,
            payment_facts(payment),
            dedupe=f"pms:pending:{payment.id}",
        )


def on_captured(payment: Payment) -> None:
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


def _queue_receipt(payment: Payment, facts: dict, *, kind: str = "payment") -> None:
    _enqueue(
        Destination.COMMUNICATION_HUB,
        "receipt.requested",
        payment,
        {
            **facts,
            "receipt_kind": kind,
            "channels": ["app", "email", "sms"],  # app first, then fallbacks
        },
    )


def on_split_settled(split: SplitPayment, tenders: list[Payment]) -> None:
    """The target's single settled outcome: one writeback and one receipt for all tenders."""
    first = tenders[0]
    payload = {
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
        event_type="receipt.requested",
        practice_id=split.practice_id,
        payment_id=first.id,
        payload={**payload, "receipt_kind": "split", "channels": ["app", "email", "sms"]},
        dedupe_key=f"receipt:split:{split.id}",
    )


def on_failed(payment: Payment) -> None:
    """Silent failures are prohibited (§13.2.6): every failure becomes a task."""
    facts = payment_facts(payment)
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
