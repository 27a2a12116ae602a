"""Deposits (product page §6): the list staff work from, and the exceptions they handle.

Appointment Manager asks for deposits and reports attendance; staff see every
deposit of their practices and sites and handle the exceptions through
`payments.deposits`: waive a requested deposit, refund a collected one, or
override a settlement. Each action needs its reason and the permission the
service checks (§9): waive `manage_exceptions` and `issue_void`, refund
`issue_refund`, override `manage_exceptions`.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from audit.actors import Actor
from audit.models import AuditEvent
from payments import deposits as deposit_services
from payments.errors import PaymentError
from payments.models import DepositStatus, ReasonCode
from payments.portal.views import _apply_error, portal_view
from practices import access
from practices.models import Site
from practices.roles import Perm

D = DepositStatus
LIST_ROWS = 200
# Deposit statuses in the colours the portal's badges already use.
BADGE = {
    D.REQUESTED: "pending",
    D.PAID: "paid",
    D.CONVERTED: "settled",
    D.FORFEITED: "expired",
    D.WAIVED: "voided",
    D.REFUNDED: "refunded",
}
ACTION_LABELS = {
    "waive": "Waive (do not collect)",
    "refund": "Refund in full",
    "override": "Override the settlement",
}


class DepositFilterForm(forms.Form):
    status = forms.ChoiceField(
        required=False, label="Status", choices=[("", "Any status"), *DepositStatus.choices]
    )
    site = forms.ChoiceField(required=False, label="Site")
    q = forms.CharField(
        required=False, max_length=64, label="Search", help_text="Appointment or patient name"
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        sites = Site.objects.filter(id__in=access.site_ids_for(user)).order_by("name")
        self.fields["site"].choices = [("", "All my sites"), *[(str(s.id), s.name) for s in sites]]


class DepositActionForm(forms.Form):
    action = forms.ChoiceField(widget=forms.RadioSelect, label="Action")
    status = forms.ChoiceField(
        required=False,
        label="Settle as (override only)",
        choices=[
            ("", "Choose"),
            (D.CONVERTED, "Converted (applied to the appointment)"),
            (D.FORFEITED, "Forfeited (no-show)"),
        ],
    )
    reason_code = forms.ChoiceField(
        required=False,
        label="Refund reason (refund only)",
        choices=[("", "Choose a reason"), *ReasonCode.choices],
    )
    reason = forms.CharField(
        max_length=255,
        label="Reason",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required: it is kept in the audit trail.",
        error_messages={"required": "Give a reason."},
    )

    def __init__(self, *args, actions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [(a, ACTION_LABELS[a]) for a in actions]

    def clean(self):
        data = super().clean()
        if data.get("action") == "override" and not data.get("status"):
            self.add_error("status", "Choose converted or forfeited.")
        if data.get("action") == "refund" and not data.get("reason_code"):
            self.add_error("reason_code", "Choose a refund reason.")
        return data


def _actions(user, deposit) -> list[str]:
    """What this person may do to this deposit now (the service checks again)."""
    actions = []
    if (
        deposit.status == D.REQUESTED
        and access.has_perm(user, Perm.MANAGE_EXCEPTIONS)
        and access.has_perm(user, Perm.ISSUE_VOID)
    ):
        actions.append("waive")
    if deposit.status in deposit_services.OVERRIDE_SOURCES:
        if access.has_perm(user, Perm.ISSUE_REFUND):
            actions.append("refund")
        if access.has_perm(user, Perm.MANAGE_EXCEPTIONS):
            actions.append("override")
    return actions


@portal_view
def deposits(request):
    form = DepositFilterForm(request.GET or None, user=request.user)
    data = form.cleaned_data if form.is_bound and form.is_valid() else {}
    rows = deposit_services.deposits_visible_to(request.user)
    if data.get("status"):
        rows = rows.filter(status=data["status"])
    if data.get("site"):
        rows = rows.filter(site_id=data["site"])
    if data.get("q"):
        rows = rows.filter(
            Q(appointment_id=data["q"]) | Q(patient__display_name__icontains=data["q"])
        )
    rows = rows.order_by("-created_at")
    return render(
        request,
        "portal/deposits.html",
        {
            "form": form,
            "rows": [(d, BADGE.get(d.status, d.status)) for d in rows[:LIST_ROWS]],
            "total": rows.count(),
            "limit": LIST_ROWS,
        },
    )


@portal_view
@require_http_methods(["GET", "POST"])
def deposit_detail(request, deposit_id):
    deposit = deposit_services.deposits_visible_to(request.user).filter(pk=deposit_id).first()
    if deposit is None:
        raise Http404("No such deposit.")
    actions = _actions(request.user, deposit)
    form = DepositActionForm(request.POST or None, actions=actions)
    if request.method == "POST" and form.is_valid():
        try:
            _act(request, deposit, form.cleaned_data)
        except PaymentError as error:
            _apply_error(form, error)
        else:
            return redirect("portal:deposit", deposit_id=deposit.id)
    history = AuditEvent.objects.filter(
        practice_id=deposit.practice_id, subject_type="deposit", subject_id=str(deposit.id)
    ).order_by("seq")
    return render(
        request,
        "portal/deposit.html",
        {
            "deposit": deposit,
            "badge": BADGE.get(deposit.status, deposit.status),
            "form": form if actions else None,
            "history": history,
        },
        status=400 if form.errors else 200,
    )


def _act(request, deposit, data) -> None:
    actor = Actor.staff(request.user)
    action = data["action"]
    if action == "waive":
        deposit_services.deposit_waive(deposit_id=deposit.id, actor=actor, reason=data["reason"])
        messages.success(request, "Deposit waived: its payment link is cancelled.")
    elif action == "refund":
        result = deposit_services.deposit_refund(
            deposit_id=deposit.id,
            actor=actor,
            reason=data["reason"],
            reason_code=data["reason_code"],
        )
        if result.approval:
            messages.warning(
                request,
                f"The refund of £{result.approval.amount} needs approval by a second person. "
                "It is in the approvals queue.",
            )
        else:
            messages.success(request, f"Refund of £{result.refund.amount} started.")
    else:
        deposit_services.deposit_override(
            deposit_id=deposit.id, actor=actor, status=data["status"], reason=data["reason"]
        )
        messages.success(request, f"Deposit overridden to {data['status']}.")
