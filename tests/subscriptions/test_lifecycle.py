"""The status table and the ordering rule: any delivery order ends where GoCardless ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from subscriptions.lifecycle import (
    MANDATE_ACTION_STATUS,
    PAYMENT_ACTION_STATUS,
    PAYMENT_STATUS_RANK,
    SubscriptionState,
    is_handled,
    mandate_state,
    payment_state,
    supersedes,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

# Histories GoCardless can produce for one payment, in the order it produced them.
HISTORIES = [
    ["created", "submitted", "confirmed", "paid_out"],
    ["created", "submitted", "failed"],
    ["created", "submitted", "failed", "resubmission_requested", "submitted", "confirmed"],
    ["created", "submitted", "confirmed", "paid_out", "charged_back", "chargeback_cancelled"],
    ["created", "submitted", "confirmed", "paid_out", "failed", "late_failure_settled"],
    ["created", "cancelled"],
    ["created", "customer_approval_denied"],
]


def test_the_surfaced_states_follow_providers_md():
    assert {s: payment_state(s) for s in PAYMENT_STATUS_RANK} == {
        "pending_customer_approval": "payment_pending",
        "pending_submission": "payment_pending",
        "submitted": "payment_pending",
        "confirmed": "paid",
        "paid_out": "paid",
        "failed": "failed",
        "charged_back": "failed",
        "cancelled": "cancelled",
        "customer_approval_denied": "cancelled",
    }
    assert mandate_state("active") == SubscriptionState.ACTIVE_MANDATE
    assert mandate_state("cancelled") == SubscriptionState.CANCELLED
    assert mandate_state("expired") == SubscriptionState.CANCELLED
    assert payment_state(PAYMENT_ACTION_STATUS["late_failure_settled"]) == "failed"


def test_only_payment_mandate_and_payout_events_are_handled():
    assert is_handled("payments", "confirmed")
    assert is_handled("mandates", "cancelled")
    assert is_handled("payouts", "paid")
    assert not is_handled("payouts", "fx_rate_confirmed")
    assert not is_handled("subscriptions", "created")
    assert not is_handled("creditors", "updated")
    assert not is_handled(None, "confirmed")
    assert set(MANDATE_ACTION_STATUS) >= {"active", "cancelled", "expired", "failed"}


def _fold(events, ranks=PAYMENT_STATUS_RANK):
    status, at = None, None
    for new_status, new_at in events:
        if supersedes(
            current_status=status, current_at=at, new_status=new_status, new_at=new_at, ranks=ranks
        ):
            status, at = new_status, new_at
        elif new_status == status and at is not None and new_at > at:
            at = new_at
    return status


@given(
    history=st.sampled_from(HISTORIES),
    gaps=st.lists(st.integers(min_value=1, max_value=10_000), min_size=6, max_size=6),
    data=st.data(),
)
def test_any_delivery_order_ends_in_the_newest_status(history, gaps, data):
    moments, moment = [], T0
    for gap in gaps[: len(history)]:
        moment += timedelta(milliseconds=gap)
        moments.append(moment)
    events = [(PAYMENT_ACTION_STATUS[a], m) for a, m in zip(history, moments, strict=True)]
    delivered = data.draw(st.permutations(events))
    duplicated = delivered + data.draw(st.lists(st.sampled_from(events), max_size=4))

    assert _fold(duplicated) == events[-1][0]


@given(data=st.data())
def test_at_the_same_instant_the_later_status_wins(data):
    history = ["created", "submitted", "confirmed", "paid_out"]
    events = [(PAYMENT_ACTION_STATUS[a], T0) for a in history]

    assert _fold(data.draw(st.permutations(events))) == "paid_out"


def test_an_older_event_never_moves_a_record():
    assert not supersedes(
        current_status="paid_out",
        current_at=T0,
        new_status="submitted",
        new_at=T0 - timedelta(seconds=1),
        ranks=PAYMENT_STATUS_RANK,
    )
    assert not supersedes(
        current_status="paid_out",
        current_at=T0,
        new_status="paid_out",
        new_at=T0 + timedelta(seconds=1),
        ranks=PAYMENT_STATUS_RANK,
    )
    assert supersedes(
        current_status="failed",
        current_at=T0,
        new_status="pending_submission",
        new_at=T0 + timedelta(seconds=1),
        ranks=PAYMENT_STATUS_RANK,
    )
