"""PMS adapters: how one practice's PMS takes payment writebacks.

`pms_adapter_for(practice)` picks the adapter from the practice's
`pms_writeback_mode` and the configured PMS endpoint:

- `unsupported`, or no PMS endpoint configured → `UnsupportedPmsAdapter`:
  nothing is sent; the relay turns the writeback into a fallback task.
- `paid_only` / `pending_marker` → `HttpPmsAdapter`, the reference adapter: a
  signed POST of the writeback document (docs/contracts.md, "PMS writeback")
  to `PMS_WRITEBACK_URL`; only `pending_marker` practices receive
  `payment.pending`.

Every adapter refuses to write a payment as paid unless it is captured (or
later) in our records, and a pending marker once the payment has moved on
(§6.3, §13.2.3). Adapters only record payments against the invoice the PMS
presented; none has a way to create or change an invoice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from integrations.destinations import Endpoint, endpoint_for
from integrations.models import Destination, OutboxMessage
from payments.models import PAID_STATES, PRE_CAPTURE_STATES, Payment
from practices.models import PmsWritebackMode

if TYPE_CHECKING:
    from integrations.relay import Transport

PENDING_MARKER_EVENT = "payment.pending"


class WritebackOutcome(StrEnum):
    WRITTEN = "written"
    RETRY = "retry"  # the PMS was unreachable or busy: try again later
    REJECTED = "rejected"  # the PMS refused this writeback: retrying cannot help
    UNSUPPORTED = "unsupported"  # this PMS takes no writeback (of this kind)
    REFUSED = "refused"  # our own rule: this must not be written (not captured)


@dataclass(frozen=True)
class WritebackResult:
    outcome: WritebackOutcome
    detail: str = ""
    attempted: bool = True  # whether a call to the PMS was made
    status_code: int | None = None
    retry_after: float | None = None


def writeback_kind(event_type: str) -> str:
    """paid | pending | refund: what the writeback records against the invoice."""
    if event_type == PENDING_MARKER_EVENT:
        return "pending"
    if event_type.startswith("refund."):
        return "refund"
    return "paid"


def is_money_writeback(event_type: str) -> bool:
    """A writeback that records money (not just a marker): its failure needs a fallback task."""
    return writeback_kind(event_type) != "pending"


def writeback_amount(payload: dict) -> str | None:
    for key in ("refund_amount", "captured_amount", "amount"):
        if payload.get(key) is not None:
            return str(payload[key])
    return None


def payment_ids(message: OutboxMessage) -> list[str]:
    """The payments a writeback covers: every tender of a split, else the one payment."""
    tenders = message.payload.get("tenders")
    if message.event_type == "split.settled" and tenders:
        return [t["payment_id"] for t in tenders]
    return [str(message.payment_id)] if message.payment_id else []


def writeback_document(message: OutboxMessage) -> dict:
    """The signed envelope plus a `writeback` summary the PMS can apply directly."""
    from integrations.relay import envelope

    payload = message.payload
    target = payload.get("billable_target") or {}
    document = envelope(message)
    document["writeback"] = {
        "kind": writeback_kind(message.event_type),
        "invoice_ref": target.get("pms_invoice_ref"),
        "billable_target": target or None,
        "patient_id": payload.get("patient_id"),
        "amount": writeback_amount(payload),
        "currency": payload.get("currency"),
        "payment_ids": payment_ids(message),
        "fees": payload.get("fees"),
    }
    return document


def refusal(message: OutboxMessage) -> str | None:
    """Why this writeback must not be sent, by our own records; None when it may."""
    ids = payment_ids(message)
    if not ids:
        return None
    states = dict(Payment.objects.filter(pk__in=ids).values_list("id", "state"))
    if writeback_kind(message.event_type) == "pending":
        for payment_id, state in states.items():
            if state not in PRE_CAPTURE_STATES:
                return f"Pending marker not written: payment {payment_id} is already {state}."
        return None
    for payment_id, state in states.items():
        if state not in PAID_STATES:
            return f"Not written as paid: payment {payment_id} is {state}, not captured."
    return None


class PmsAdapter(ABC):
    """One PMS's writeback capabilities and the call that performs it."""

    supports_writeback: bool = False
    supports_pending_marker: bool = False

    def write_payment(self, message: OutboxMessage) -> WritebackResult:
        reason = refusal(message)
        if reason:
            return WritebackResult(WritebackOutcome.REFUSED, reason, attempted=False)
        if not self.supports_writeback:
            return WritebackResult(
                WritebackOutcome.UNSUPPORTED, self.unsupported_reason(), attempted=False
            )
        if writeback_kind(message.event_type) == "pending" and not self.supports_pending_marker:
            return WritebackResult(
                WritebackOutcome.UNSUPPORTED,
                "This PMS takes no pending marker; only captured payments are written.",
                attempted=False,
            )
        return self._write(message)

    def unsupported_reason(self) -> str:
        return "This PMS does not support payment writeback."

    @abstractmethod
    def _write(self, message: OutboxMessage) -> WritebackResult: ...


class UnsupportedPmsAdapter(PmsAdapter):
    """No writeback: every money outcome becomes a fallback task."""

    def __init__(self, reason: str):
        self.reason = reason

    def unsupported_reason(self) -> str:
        return self.reason

    def _write(self, message: OutboxMessage) -> WritebackResult:  # pragma: no cover - never called
        raise NotImplementedError


class HttpPmsAdapter(PmsAdapter):
    """The reference adapter: a signed POST to the PMS writeback endpoint.

    2xx written; 501 means the PMS has no writeback; other statuses follow the
    relay's rules (5xx/408/429/timeouts retried, other 4xx rejected).
    """

    supports_writeback = True

    def __init__(
        self, *, endpoint: Endpoint, transport: Transport, supports_pending_marker: bool = False
    ):
        self.endpoint = endpoint
        self.transport = transport
        self.supports_pending_marker = supports_pending_marker

    def _write(self, message: OutboxMessage) -> WritebackResult:
        from integrations.relay import Outcome

        result = self.transport.post(self.endpoint, message, writeback_document(message))
        if result.outcome == Outcome.DELIVERED:
            return WritebackResult(
                WritebackOutcome.WRITTEN, result.detail, True, result.status_code
            )
        if result.status_code == 501:
            return WritebackResult(
                WritebackOutcome.UNSUPPORTED,
                f"The PMS does not support writeback ({result.detail}).",
                True,
                501,
            )
        outcome = (
            WritebackOutcome.RETRY if result.outcome == Outcome.RETRY else WritebackOutcome.REJECTED
        )
        return WritebackResult(outcome, result.detail, True, result.status_code, result.retry_after)


def pms_adapter_for(practice, *, transport: Transport) -> PmsAdapter:
    """The adapter for this practice's PMS, from its writeback mode and the PMS endpoint."""
    if practice.pms_writeback_mode == PmsWritebackMode.UNSUPPORTED:
        return UnsupportedPmsAdapter(
            "The practice's PMS does not support writeback (pms_writeback_mode=unsupported)."
        )
    endpoint = endpoint_for(Destination.PMS)
    if not endpoint.enabled:
        return UnsupportedPmsAdapter(endpoint.disabled_reason)
    return HttpPmsAdapter(
        endpoint=endpoint,
        transport=transport,
        supports_pending_marker=practice.pms_writeback_mode == PmsWritebackMode.PENDING_MARKER,
    )
