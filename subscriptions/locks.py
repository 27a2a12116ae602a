"""Row locks for the subscription write path (select_for_update); mandate before payment."""

from __future__ import annotations

from subscriptions.models import SubscriptionMandate, SubscriptionPayment


def lock_mandate(gocardless_mandate_id: str) -> SubscriptionMandate | None:
    return (
        SubscriptionMandate.objects.select_for_update()
        .filter(gocardless_mandate_id=gocardless_mandate_id)
        .first()
    )


def lock_payment(gocardless_payment_id: str) -> SubscriptionPayment | None:
    return (
        SubscriptionPayment.objects.select_for_update(of=("self",))
        .select_related("mandate")
        .filter(gocardless_payment_id=gocardless_payment_id)
        .first()
    )
