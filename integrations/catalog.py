"""Every outbound message we can emit (§6.2): the one registry of event types.

`outbox_enqueue` refuses a message that is not listed here, so a new event
type cannot be emitted without being registered; and a registered type
without a documented example payload (docs/contracts.md, "Payload examples")
or a delivery test (tests/integrations/test_outbound_catalog.py) fails the
tests. Task Manager messages are told apart by their `task_type`.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.models import Destination

D = Destination


@dataclass(frozen=True)
class OutboundEvent:
    destination: str
    event_type: str
    task_type: str = ""

    @property
    def key(self) -> str:
        """A stable name, e.g. `task_manager:task.create:refund_failed`."""
        base = f"{self.destination}:{self.event_type}"
        return f"{base}:{self.task_type}" if self.task_type else base


def _tasks(event_type: str, *task_types: str) -> list[OutboundEvent]:
    return [OutboundEvent(D.TASK_MANAGER, event_type, task_type) for task_type in task_types]


OUTBOUND_EVENTS: tuple[OutboundEvent, ...] = (
    # Financial Signals (payments/events.py, subscriptions/events.py).
    OutboundEvent(D.FINANCIAL_INSIGHTS, "payment.captured"),
    OutboundEvent(D.FINANCIAL_INSIGHTS, "payment.refunded"),
    OutboundEvent(D.FINANCIAL_INSIGHTS, "payment.partially_refunded"),
    OutboundEvent(D.FINANCIAL_INSIGHTS, "deposit.converted"),
    OutboundEvent(D.FINANCIAL_INSIGHTS, "deposit.forfeited"),
    OutboundEvent(D.FINANCIAL_INSIGHTS, "subscription.payment.received"),
    OutboundEvent(D.FINANCIAL_INSIGHTS, "subscription.payment.failed"),
    # The subscription modules gate fulfilment on these.
    OutboundEvent(D.CARE_PLAN, "subscription.payment.received"),
    OutboundEvent(D.CARE_PLAN, "subscription.payment.failed"),
    OutboundEvent(D.HYGIENE, "subscription.payment.received"),
    OutboundEvent(D.HYGIENE, "subscription.payment.failed"),
    # A mandate no payment can be collected on any more (subscriptions/events.py).
    *(
        OutboundEvent(module, f"subscription.mandate.{status}")
        for module in (D.CARE_PLAN, D.HYGIENE)
        for status in ("failed", "blocked", "cancelled", "expired")
    ),
    OutboundEvent(D.REWARDS_MANAGER, "rewards.redemption"),
    # Communication Hub sends to the patient.
    OutboundEvent(D.COMMUNICATION_HUB, "receipt.requested"),
    OutboundEvent(D.COMMUNICATION_HUB, "payment_link.deliver"),
    OutboundEvent(D.COMMUNICATION_HUB, "payment_reminder.requested"),
    # Task Manager: someone must act.
    *_tasks(
        "task.create",
        "payment_failed",
        "payment_exception",
        "payment_disputed",
        "refund_failed",
        "approval_required",
        "overdue_balance",
        "pms_writeback_fallback",
        "subscription_payment_failed",
        "subscription_mandate_stopped",
        "webhook_event_parked",
    ),
    *_tasks("payment_link.reissue_requested", "payment_link_reissue"),
    OutboundEvent(D.INVENTORY, "supplier_payment.executed"),
    OutboundEvent(D.INVENTORY, "supplier_payment.failed"),
    OutboundEvent(D.INVENTORY, "supplier_payment.refunded"),
    OutboundEvent(D.TELEPHONY, "call_recording.mute"),
    OutboundEvent(D.TELEPHONY, "call_recording.unmute"),
    # PMS writebacks (the adapter adds the `writeback` summary to the envelope).
    OutboundEvent(D.PMS, "payment.pending"),
    OutboundEvent(D.PMS, "payment.captured"),
    OutboundEvent(D.PMS, "split.settled"),
    OutboundEvent(D.PMS, "refund.completed"),
    OutboundEvent(D.PMS, "subscription.payment.paid_out"),
)

_BY_KEY = {event.key: event for event in OUTBOUND_EVENTS}


def outbound_event_for(destination: str, event_type: str, payload: dict) -> OutboundEvent | None:
    """The registered event this message is, or None."""
    task_type = payload.get("task_type", "") if str(destination) == D.TASK_MANAGER else ""
    return _BY_KEY.get(OutboundEvent(str(destination), event_type, task_type).key)


def require_registered(destination: str, event_type: str, payload: dict) -> OutboundEvent:
    event = outbound_event_for(destination, event_type, payload)
    if event is None:
        raise ValueError(
            f"{destination} / {event_type} (task_type {payload.get('task_type')!r}) is not in "
            "integrations.catalog.OUTBOUND_EVENTS: register it, document an example payload "
            "in docs/contracts.md and add it to the delivery test."
        )
    return event
