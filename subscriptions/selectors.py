"""Reads of subscription status, always scoped to what the user may see (§13.4 subscription view).

`subscription_statuses` is the "status by patient, by subscription module"
view: one row per patient and module, from the patient's most recent mandate
for that module and its latest payment. A mandate that is cancelled or failed
decides the row (no payment can be collected on it); otherwise the latest
payment does; with no payment yet, the mandate's own state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import OuterRef, QuerySet, Subquery

from practices import access
from subscriptions.lifecycle import SubscriptionState
from subscriptions.models import SubscriptionMandate, SubscriptionPayment

_MANDATE_DECIDES = frozenset({SubscriptionState.CANCELLED, SubscriptionState.FAILED})


def subscription_payments_visible_to(user) -> QuerySet[SubscriptionPayment]:
    return access.scope(SubscriptionPayment.objects.all(), user).select_related(
        "patient", "site", "mandate"
    )


def subscription_mandates_visible_to(user) -> QuerySet[SubscriptionMandate]:
    return access.scope(SubscriptionMandate.objects.all(), user).select_related("patient", "site")


@dataclass(frozen=True)
class SubscriptionStatus:
    """One patient's status in one subscription module."""

    practice_id: object
    site_id: object
    patient_id: object
    patient_name: str
    module: str
    state: str
    mandate_reference: str
    mandate_state: str
    gocardless_mandate_id: str
    latest_payment_id: str | None
    latest_payment_state: str | None
    amount: Decimal | None
    currency: str | None
    charge_date: object
    failure_reason_code: str | None
    updated_at: datetime


def subscription_statuses(
    user, *, module: str | None = None, patient_id=None, state: str | None = None
) -> list[SubscriptionStatus]:
    """Status by patient and module, newest first; filter by module, patient and state."""
    latest = SubscriptionPayment.objects.filter(mandate=OuterRef("pk")).order_by(
        "-charge_date", "-created_at"
    )
    mandates = subscription_mandates_visible_to(user).annotate(
        p_id=Subquery(latest.values("gocardless_payment_id")[:1]),
        p_state=Subquery(latest.values("state")[:1]),
        p_amount=Subquery(latest.values("amount")[:1]),
        p_currency=Subquery(latest.values("currency")[:1]),
        p_charge_date=Subquery(latest.values("charge_date")[:1]),
        p_reason=Subquery(latest.values("failure_reason_code")[:1]),
        p_updated=Subquery(latest.values("updated_at")[:1]),
    )
    if module:
        mandates = mandates.filter(module=module)
    if patient_id:
        mandates = mandates.filter(patient_id=patient_id)
    rows: dict[tuple, SubscriptionStatus] = {}
    for m in mandates.order_by("-created_at"):
        key = (m.patient_id, m.module)
        if key in rows:  # an older mandate of the same patient and module (replaced)
            continue
        mandate_decides = m.state in _MANDATE_DECIDES or m.p_state is None
        surfaced = m.state if mandate_decides else m.p_state
        rows[key] = SubscriptionStatus(
            practice_id=m.practice_id,
            site_id=m.site_id,
            patient_id=m.patient_id,
            patient_name=m.patient.display_name,
            module=m.module,
            state=surfaced,
            mandate_reference=m.mandate_reference,
            mandate_state=m.state,
            gocardless_mandate_id=m.gocardless_mandate_id,
            latest_payment_id=m.p_id,
            latest_payment_state=m.p_state,
            amount=m.p_amount,
            currency=m.p_currency,
            charge_date=m.p_charge_date,
            failure_reason_code=m.p_reason or None,
            updated_at=max(filter(None, (m.updated_at, m.p_updated))),
        )
    statuses = sorted(rows.values(), key=lambda row: row.updated_at, reverse=True)
    if state:
        statuses = [row for row in statuses if row.state == state]
    return statuses
