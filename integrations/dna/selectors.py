"""Reads: reconciliation exceptions and DNA events for finance staff, and whose a DNA fact is.

Scoped like every other read (practices.access): a user sees their practices'
rows only. Rows no practice could be found for (an unknown transaction DNA
cannot attribute) are seen by platform superusers.

`owner_of_terminal_id` and `owner_from_dna` are the one place that says which
practice (and site) a DNA transaction we cannot match belongs to: by the DNA
terminal id that took it (a card terminal, or a practice's online terminal).
Settlement exceptions and unmatched webhook events both use them.
"""

from __future__ import annotations

from django.db.models import QuerySet

from integrations.dna.client import DnaClient
from integrations.dna.models import SettlementItem
from integrations.models import WebhookEvent
from practices import access
from practices.models import Practice
from terminals.models import Terminal


def owner_of_terminal_id(terminal_id: str) -> tuple[Practice | None, object]:
    """(practice, site id) of a DNA terminal id: a card terminal's, or a practice's online one."""
    if not terminal_id:
        return None, None
    terminal = Terminal.objects.select_related("practice").filter(tid=terminal_id).first()
    if terminal is not None:
        return terminal.practice, terminal.site_id
    return Practice.objects.filter(dna_terminal_id=terminal_id).first(), None


def owner_from_dna(invoice_id: str, dna: DnaClient) -> tuple[Practice | None, object]:
    """Whose transaction(s) for this invoiceId are, by the terminal DNA says took them.

    Asks DNA (GET /v2/transactions/{invoiceId}/list); a DnaError is the caller's to handle.
    """
    if not invoice_id:
        return None, None
    for found in dna.transactions(invoice_id):
        practice, site_id = owner_of_terminal_id(found.terminal_id)
        if practice is not None:
            return practice, site_id
    return None, None


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
