"""Reads of payments, always scoped to what the actor may see (tenant and site)."""

from __future__ import annotations

from payments.errors import NotFound
from payments.models import Payment
from practices import access


def payments_visible_to(user):
    return access.scope(Payment.objects.all(), user).select_related("site", "patient", "terminal")


def payment_get_for(user, payment_id) -> Payment:
    """One payment the user may see; anything else is 'not found', never 'forbidden'."""
    try:
        return payments_visible_to(user).get(pk=payment_id)
    except (Payment.DoesNotExist, ValueError):
        raise NotFound("No such payment.") from None
