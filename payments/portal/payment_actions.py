"""Payment detail actions beyond the lifecycle: send the receipt again, cancel or resend a link.

Thin, like the other portal views: each calls one service function (which
checks the permission, locks, audits and writes the outbox row) and goes back
to the payment with a message saying what really happened (queued, not sent).
"""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from audit.actors import Actor
from payments import links, receipts, selectors
from payments.errors import PaymentError
from payments.models import PaymentLink
from payments.portal.views import portal_view


def _link_of(payment) -> PaymentLink | None:
    return PaymentLink.objects.filter(payment=payment).first()


@portal_view
@require_POST
def receipt_send(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    try:
        receipts.receipt_resend(payment_id=payment.id, actor=Actor.staff(request.user))
    except PaymentError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            "Receipt queued for Communication Hub, which sends it to the patient's app first, "
            "then by email or SMS.",
        )
    return redirect("portal:payment", payment_id=payment.id)


@portal_view
@require_POST
def link_cancel(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    link = _link_of(payment)
    if link is None:
        messages.error(request, "This payment has no payment link.")
        return redirect("portal:payment", payment_id=payment.id)
    try:
        links.payment_link_cancel(link_id=link.id, actor=Actor.staff(request.user))
    except PaymentError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Payment link cancelled: it no longer works, and no money moved.")
    return redirect("portal:payment", payment_id=payment.id)


@portal_view
@require_POST
def link_resend(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    link = _link_of(payment)
    if link is None:
        messages.error(request, "This payment has no payment link.")
        return redirect("portal:payment", payment_id=payment.id)
    try:
        link = links.payment_link_resend(link_id=link.id, actor=Actor.staff(request.user))
    except PaymentError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            f"A new link is queued for sending by {link.get_channel_display()}; the previous "
            f"link no longer works. It expires {link.expires_at:%d %b %Y %H:%M} UTC.",
        )
    return redirect("portal:payment", payment_id=payment.id)
