"""Staff amendments after the fact: cancel an open split, add a fulfilled order's invoice reference.

Thin, like every portal view: the services check the permission (§9), lock,
audit and say what is wrong.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from audit.actors import Actor
from payments import selectors, services
from payments.errors import PaymentError
from payments.models import SplitPayment
from payments.portal.drawer import _split_for
from payments.portal.forms import VoidForm
from payments.portal.views import _apply_error, portal_view


class InvoiceRefForm(forms.Form):
    pms_invoice_ref = forms.CharField(
        max_length=64,
        label="PMS invoice reference",
        help_text="The invoice the PMS raised for this order once it was fulfilled.",
        error_messages={"required": "Enter the PMS invoice reference."},
    )


@portal_view
@require_POST
def payment_invoice_ref(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    form = InvoiceRefForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.errors["pms_invoice_ref"][0])
        return redirect("portal:payment", payment_id=payment.id)
    try:
        changed = services.payment_set_invoice_ref(
            payment_id=payment.id,
            actor=Actor.staff(request.user),
            pms_invoice_ref=form.cleaned_data["pms_invoice_ref"],
        )
    except PaymentError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            f"Invoice reference recorded on {len(changed)} payment(s) of this order."
            if changed
            else "This order already has that invoice reference.",
        )
    return redirect("portal:payment", payment_id=payment.id)


@portal_view
@require_http_methods(["GET", "POST"])
def split_cancel(request, split_id):
    split = _split_for(request, split_id)
    if split.status != SplitPayment.Status.OPEN:
        raise Http404("Only an open split payment can be cancelled.")
    form = VoidForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = services.split_cancel(
                split_id=split.id,
                actor=Actor.staff(request.user),
                reason_code=form.cleaned_data["reason_code"],
                notes=form.cleaned_data["notes"],
            )
        except PaymentError as error:
            _apply_error(form, error)
        else:
            waiting = sum(1 for r in result.refunds if r.approval)
            text = (
                f"Split cancelled: {len(result.voided)} tender(s) voided, "
                f"{len(result.refunds)} refund(s) started."
            )
            if waiting:
                text += f" {waiting} refund(s) wait for approval by a second person."
            messages.success(request, text)
            return redirect("portal:split", split_id=split.id)
    return render(
        request,
        "portal/split_cancel.html",
        {"split": split, "form": form, "remaining": services.split_remaining(split)},
        status=400 if form.errors else 200,
    )
