"""Payment communications as staff read them (§6.2, §8): every message we asked Communication Hub to send.

Communication Hub sends receipts, payment links and overdue reminders to the
patient (app first, then email or SMS) and keeps the log of what reached whom.
Our side of that log is the outbox row written with the change that caused the
message: what was asked, when, in which channel order, and whether Communication
Hub took it. Its contract reports no channel back, so nothing here claims one.

A `payment_link.deliver` payload carries the link's URL, whose token is the
patient's credential: the log reads only the payload keys in SHOWN_PAYLOAD_KEYS
(the selector asks the database for those alone), and the URL is not one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from integrations.models import OutboxMessage
from payments import events
from payments.models import Payment, PaymentLink

Status = OutboxMessage.Status

# Every Communication Hub event type in integrations.catalog, as staff name it
# (tests/portal/test_communications.py checks none is missing).
EVENT_LABELS = {
    events.RECEIPT_EVENT: "Receipt",
    events.LINK_DELIVERY_EVENT: "Payment link",
    events.REMINDER_EVENT: "Overdue reminder",
}
# The only payload keys the log reads: never `url` (a credential) or anything personal.
SHOWN_PAYLOAD_KEYS = (
    "channels",
    "receipt_kind",
    "resend",
    "reminder_number",
    "reminders_scheduled",
)
_RECEIPT_KINDS = {
    "payment": "Payment receipt",
    "refund": "Refund receipt",
    "split": "Split receipt",
}
_CHANNELS = dict(PaymentLink.Channel.choices)

# Short label (the receipt panel, the list's badge) per delivery status.
DELIVERY_LABELS = {
    Status.PENDING: "Queued for Communication Hub",
    Status.DELIVERED: "Delivered to Communication Hub",
    Status.DEAD: "Not delivered to Communication Hub",
    Status.DISABLED: "Not sent: Communication Hub is not configured",
}
STATUS_FILTER_LABELS = {
    Status.PENDING: "Queued (pending)",
    Status.DELIVERED: "Delivered",
    Status.DEAD: "Not delivered (dead)",
    Status.DISABLED: "Not sent (disabled)",
}


def delivery_label(message: OutboxMessage) -> str:
    return DELIVERY_LABELS.get(message.status, message.get_status_display())


def receipt_kind(payload: dict) -> str:
    """'Payment receipt', 'Refund receipt (sent again)' ... from the receipt's payload."""
    label = _RECEIPT_KINDS.get(payload.get("receipt_kind"), "Receipt")
    return f"{label} (sent again)" if payload.get("resend") else label


def _time(value: datetime | None) -> str:
    return f"{value:%-d %b %Y %H:%M} UTC" if value else ""


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


@dataclass(frozen=True)
class Communication:
    """One message in the log.

    `message` is the outbox row without its payload; `shown` holds only the
    SHOWN_PAYLOAD_KEYS of it; `payment` is the payment it is about (None: a
    message about no payment).
    """

    message: OutboxMessage
    shown: dict
    payment: Payment | None

    @property
    def what(self) -> str:
        event_type, shown = self.message.event_type, self.shown
        if event_type == events.RECEIPT_EVENT:
            return receipt_kind(shown)
        number, of = shown.get("reminder_number"), shown.get("reminders_scheduled")
        if event_type == events.REMINDER_EVENT and isinstance(number, int) and isinstance(of, int):
            return f"Overdue reminder {number} of {of}"
        return EVENT_LABELS.get(event_type, event_type)

    @property
    def channels(self) -> list[str]:
        """The channel order Communication Hub was asked to try, first one first."""
        channels = self.shown.get("channels")
        if not isinstance(channels, list):
            return []
        return [_CHANNELS.get(c, str(c)) for c in channels]

    @property
    def status_label(self) -> str:
        return delivery_label(self.message)

    @property
    def explanation(self) -> str:
        """What the status means for the patient, in plain words."""
        message = self.message
        if message.status == Status.DELIVERED:
            return (
                f"Communication Hub took it at {_time(message.delivered_at)} and sends it to the "
                "patient; it does not tell us which channel reached them."
            )
        if message.status == Status.DEAD:
            return (
                "Communication Hub refused it or could not be reached "
                f"({_attempts(message.attempts)}), so the patient was not sent it. A finance "
                "admin can send it again from the admin (outbox messages)."
            )
        if message.status == Status.DISABLED:
            return (
                "Communication Hub is not connected here, so it was kept and not sent. "
                "It goes once an administrator connects it and sends it again from the admin."
            )
        if message.attempts:
            return (
                f"Communication Hub did not take it yet ({_attempts(message.attempts)} failed); "
                f"the next try is at {_time(message.next_attempt_at)}."
            )
        return "Waiting to be handed to Communication Hub, usually within seconds."
