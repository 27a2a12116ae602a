"""Back-office pages: subscription payment status (§13.4), the communications log (§6.2, §8)
and the exceptions finance staff work.

Read-only. Subscriptions are GoCardless's and the subscription modules'
(Care Plan, Hygiene): we show their status by patient and by module, and offer
no action that could start or retry a collection. The exceptions page lists
settlement items that did not match and DNA events with no matching payment,
for staff holding MANAGE_EXCEPTIONS; the payment exceptions themselves
(failed, pending reconciliation or PMS writeback, disputed) are filters on the
payments list, linked from here with their counts.
"""

from __future__ import annotations

from collections import Counter

from django import forms
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_GET

from integrations.dna import selectors as dna_selectors
from payments import selectors
from payments.portal.forms import CommunicationFilterForm
from payments.portal.views import keyset_page, portal_view
from practices import access
from practices.roles import Perm
from subscriptions import selectors as subscription_selectors
from subscriptions.lifecycle import SubscriptionModule, SubscriptionState

EXCEPTION_ROWS = 200  # a page of each list; the counts say how many there are in all


class SubscriptionFilterForm(forms.Form):
    module = forms.ChoiceField(
        required=False,
        label="Subscription module",
        choices=[("", "Every module"), *SubscriptionModule.choices],
    )
    state = forms.ChoiceField(
        required=False, label="Status", choices=[("", "Any status"), *SubscriptionState.choices]
    )
    patient = forms.ChoiceField(required=False, label="Patient")

    def __init__(self, *args, patients, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["patient"].choices = [("", "Every patient"), *patients]


def _patients_with_mandates(user) -> list[tuple[str, str]]:
    rows = (
        subscription_selectors.subscription_mandates_visible_to(user)
        .order_by("patient__display_name", "patient_id")
        .values_list("patient_id", "patient__display_name")
        .distinct()
    )
    return [(str(patient_id), name) for patient_id, name in rows]


def _by_module(statuses) -> list[dict]:
    """One row per module: how many patients are in each surfaced state."""
    counts = Counter((row.module, row.state) for row in statuses)
    return [
        {
            "module": module,
            "label": label,
            "states": [counts[(module, state)] for state in SubscriptionState.values],
            "total": sum(counts[(module, state)] for state in SubscriptionState.values),
        }
        for module, label in SubscriptionModule.choices
    ]


@portal_view
@require_GET
def subscriptions(request):
    """Status by patient and by subscription module (visibility only: GoCardless collects)."""
    form = SubscriptionFilterForm(
        request.GET or None, patients=_patients_with_mandates(request.user)
    )
    data = form.cleaned_data if form.is_bound and form.is_valid() else {}
    statuses = subscription_selectors.subscription_statuses(
        request.user,
        module=data.get("module") or None,
        patient_id=data.get("patient") or None,
        state=data.get("state") or None,
    )
    module_labels = dict(SubscriptionModule.choices)
    state_labels = dict(SubscriptionState.choices)
    rows = sorted(statuses, key=lambda row: (row.patient_name.casefold(), row.module))
    return render(
        request,
        "portal/subscriptions.html",
        {
            "form": form,
            "rows": [
                {
                    "status": row,
                    "module_label": module_labels.get(row.module, row.module),
                    "state_label": state_labels.get(row.state, row.state),
                }
                for row in rows
            ],
            "by_module": _by_module(statuses),
            "state_labels": SubscriptionState.choices,
            "failed": sum(1 for row in statuses if row.state == SubscriptionState.FAILED),
            "filtered": bool(data and any(data.values())),
        },
    )


@portal_view
@require_GET
def communications(request):
    """Every payment message we asked Communication Hub to send (§6.2, §8), newest first.

    Read-only, scoped like the payments list. Never shows a payment link's URL:
    its token is the patient's credential.
    """
    form = CommunicationFilterForm(request.GET or None)
    filters = form.filters()
    page, query = keyset_page(
        request, lambda cursor: selectors.communications_page(request.user, filters, cursor=cursor)
    )
    return render(
        request, "portal/communications.html", {"form": form, "page": page, "query": query}
    )


@portal_view
@require_GET
def reconciliation(request):
    """Settlement items that did not match, and provider events with no matching payment."""
    if not access.has_perm(request.user, Perm.MANAGE_EXCEPTIONS):
        raise PermissionDenied("Only finance staff can see reconciliation exceptions.")
    items = dna_selectors.reconciliation_exceptions(request.user)
    events = dna_selectors.unmatched_provider_events(request.user).order_by("-received_at")
    shown_items, shown_events = list(items[:EXCEPTION_ROWS]), list(events[:EXCEPTION_ROWS])
    # Link a row to its payment only where this person may open that payment.
    payment_ids = {row.payment_id for row in [*shown_items, *shown_events] if row.payment_id}
    visible_payments = set(
        selectors.payments_visible_to(request.user)
        .filter(pk__in=payment_ids)
        .values_list("pk", flat=True)
    )
    return render(
        request,
        "portal/reconciliation.html",
        {
            "items": shown_items,
            "items_total": items.count(),
            "events": shown_events,
            "events_total": events.count(),
            "payment_exceptions": selectors.exception_summaries(request.user),
            "visible_payments": visible_payments,
            "limit": EXCEPTION_ROWS,
        },
    )
