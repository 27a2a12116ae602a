"""Reads for finance staff: reconciliation exceptions and DNA events that need attention.

Scoped like every other read (practices.access): a user sees their practices'
rows only. Rows no practice could be found for (an unknown transaction DNA
cannot attribute) are seen by platform superusers.
"""

from __future__ import annotations

from django.db.models import QuerySet

from integrations.dna.models import SettlementItem
from integrations.models import WebhookEvent
from practices import access


def _scoped(queryset: QuerySet, user) -> QuerySet:
    if getattr(user, "is_superuser", False) and user.is_active:
        return queryset
    return access.scope(queryset, user)


def reconciliation_exceptions(user) -> QuerySet[SettlementItem]:
    """Settlement items that could not be matched (unknown transaction, amount mismatch, ...)."""
    queryset = SettlementItem.objects.filter(status=SettlementItem.Status.EXCEPTION)
    return _scoped(queryset, user).select_related("batch", "payment", "practice").order_by("-pk")


def unmatched_provider_events(user) -> QuerySet[WebhookEvent]:
    """DNA webhook events kept as unmatched (unknown payment, or a fact flagged, not applied)."""
    queryset = WebhookEvent.objects.filter(
        provider__in=[WebhookEvent.Provider.DNA, WebhookEvent.Provider.DNA_TERMINAL],
        status=WebhookEvent.Status.UNMATCHED,
    )
    if getattr(user, "is_superuser", False) and user.is_active:
        return queryset
    return access.scope(queryset, user, site_field=None)
