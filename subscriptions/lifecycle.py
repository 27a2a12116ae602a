"""GoCardless statuses, the five surfaced states (§3.3) they map to, and which event wins.

This module is the one table: what each GoCardless event action means for a
payment's or mandate's raw status, how raw statuses map to our surfaced state
(PROVIDERS.md: active mandate ← mandate active; payment pending ←
pending_*/submitted; paid ← confirmed or paid_out; failed ← failed,
charged_back, late failure; cancelled ← cancelled, customer_approval_denied,
mandate cancelled/expired), and `supersedes`, which decides whether an event
may change a record given what it last applied. GoCardless delivers events
mixed and out of order, so order comes from the event's `created_at`, with the
status precedence breaking ties; an older event never moves a record.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models


class SubscriptionState(models.TextChoices):
    """The §3.3 states Integrated Payments surfaces. Visibility only: none triggers a collection."""

    ACTIVE_MANDATE = "active_mandate", "Active mandate"
    PAYMENT_PENDING = "payment_pending", "Payment pending"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class SubscriptionModule(models.TextChoices):
    """The platform modules that own subscription billing (and receive our status events)."""

    CARE_PLAN = "care_plan", "Care Plan Subscriptions"
    HYGIENE = "hygiene", "Hygiene Subscriptions"


State = SubscriptionState

# --- Payments ----------------------------------------------------------------------------------

# The raw payment status each handled `payments` action leaves behind.
PAYMENT_ACTION_STATUS: dict[str, str] = {
    "created": "pending_submission",
    "customer_approval_granted": "pending_submission",
    "customer_approval_denied": "customer_approval_denied",
    "submitted": "submitted",
    "confirmed": "confirmed",
    "paid_out": "paid_out",
    "failed": "failed",
    "late_failure_settled": "failed",
    "charged_back": "charged_back",
    "chargeback_settled": "charged_back",
    "chargeback_cancelled": "paid_out",
    "cancelled": "cancelled",
    "resubmission_requested": "pending_submission",
}
# GoCardless's own progression: a later status outranks an earlier one at the same instant.
PAYMENT_STATUS_RANK: dict[str, int] = {
    "pending_customer_approval": 0,
    "pending_submission": 1,
    "submitted": 2,
    "confirmed": 3,
    "paid_out": 4,
    "cancelled": 5,
    "customer_approval_denied": 5,
    "failed": 6,
    "charged_back": 7,
}

PAYMENT_STATE: dict[str, str] = {
    "pending_customer_approval": State.PAYMENT_PENDING,
    "pending_submission": State.PAYMENT_PENDING,
    "submitted": State.PAYMENT_PENDING,
    "confirmed": State.PAID,
    "paid_out": State.PAID,
    "failed": State.FAILED,
    "charged_back": State.FAILED,
    "cancelled": State.CANCELLED,
    "customer_approval_denied": State.CANCELLED,
}

# --- Mandates ----------------------------------------------------------------------------------

MANDATE_ACTION_STATUS: dict[str, str] = {
    "created": "pending_submission",
    "customer_approval_granted": "pending_submission",
    "customer_approval_skipped": "pending_submission",
    "submitted": "submitted",
    "active": "active",
    "reinstated": "active",
    "transferred": "active",
    "resubmission_requested": "pending_submission",
    "suspended_by_payer": "suspended_by_payer",
    "failed": "failed",
    "blocked": "blocked",
    "cancelled": "cancelled",
    "expired": "expired",
    "consumed": "consumed",
}

MANDATE_STATUS_RANK: dict[str, int] = {
    "pending_customer_approval": 0,
    "pending_submission": 1,
    "submitted": 2,
    "active": 3,
    "suspended_by_payer": 4,
    "failed": 5,
    "blocked": 5,
    "cancelled": 6,
    "expired": 6,
    "consumed": 6,
}

MANDATE_STATE: dict[str, str] = {
    "pending_customer_approval": State.PAYMENT_PENDING,
    "pending_submission": State.PAYMENT_PENDING,
    "submitted": State.PAYMENT_PENDING,
    "active": State.ACTIVE_MANDATE,
    "failed": State.FAILED,
    "blocked": State.FAILED,
    # No collection can happen on these: the subscription is effectively stopped.
    "suspended_by_payer": State.CANCELLED,
    "cancelled": State.CANCELLED,
    "expired": State.CANCELLED,
    "consumed": State.CANCELLED,
}

# `payouts` actions we act on (fees arrive with the payout).
PAYOUT_ACTIONS = frozenset({"paid"})

HANDLED_ACTIONS: dict[str, frozenset[str]] = {
    "payments": frozenset(PAYMENT_ACTION_STATUS),
    "mandates": frozenset(MANDATE_ACTION_STATUS),
    "payouts": PAYOUT_ACTIONS,
}


def is_handled(resource_type: object, action: object) -> bool:
    """Whether we act on this kind of event at all (everything else is answered 204)."""
    return isinstance(resource_type, str) and action in HANDLED_ACTIONS.get(resource_type, ())


def payment_state(status: str) -> str:
    return PAYMENT_STATE[status]


def mandate_state(status: str) -> str:
    """A mandate status we do not know (GoCardless may add some) counts as pending."""
    return MANDATE_STATE.get(status, State.PAYMENT_PENDING)


def supersedes(
    *,
    current_status: str,
    current_at: datetime | None,
    new_status: str,
    new_at: datetime,
    ranks: dict[str, int],
) -> bool:
    """Whether an event (`new_status` at `new_at`) may replace what a record last applied.

    - The same status again is not a change.
    - An event older than the one last applied never changes anything.
    - A newer event always wins: GoCardless's own moves "backwards" (a
      resubmission after a failure, a cancelled chargeback, a reinstated
      mandate) are newer events too.
    - At the same instant, the status further along GoCardless's progression wins.
    """
    if new_status == current_status:
        return False
    if current_at is None or new_at > current_at:
        return True
    if new_at < current_at:
        return False
    return ranks.get(new_status, -1) > ranks.get(current_status, -1)
