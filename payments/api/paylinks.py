"""The one-time pay-by-link, for the app (§5.3): the same link as the /pay/<token>/ page.

No sign-in: the token is the credential, so these endpoints are throttled per
client IP. They reuse payments.links, so single use, expiry, the shared
checkout and the "ask for a new link" task behave exactly as on the page.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from payments.api import serializers as s
from payments.api.base import LinkView
from payments.api.idempotency import idempotent
from payments.api.schema import IDEMPOTENCY_KEY, LINK_TOKEN, errors
from payments.api.throttling import LinkThrottle, PayIpThrottle
from payments.balances import checkout_from_cached
from payments.errors import NotFound
from payments.links import (
    link_for_token,
    payment_link_checkout,
    payment_link_request_reissue,
)
from payments.models import PAID_STATES, PaymentLink, PaymentState

TAG = ["pay-by-link"]
L = PaymentLink.Status


def _link(token: str) -> PaymentLink:
    link = link_for_token(token)
    if link is None:
        raise NotFound("No such payment link.")
    return link


def link_status(link: PaymentLink) -> str:
    if link.payment.state in PAID_STATES:
        return L.USED
    return link.effective_status(timezone.now())


class LinkDetailView(LinkView):
    @extend_schema(
        tags=TAG,
        operation_id="link_retrieve",
        summary="What a payment link is for, and whether it can still be paid",
        parameters=[LINK_TOKEN],
        responses={200: s.LinkSerializer, **errors(404, 429)},
        auth=[],
    )
    def get(self, request, token: str):
        link = _link(token)
        payment = link.payment
        status = link_status(link)
        return Response(
            s.LinkSerializer(
                {
                    "status": status,
                    "practice_name": link.practice.name,
                    "amount": payment.charge_amount,
                    "currency": payment.currency,
                    "invoice_reference": payment.pms_invoice_ref,
                    "expires_at": link.expires_at,
                    "last_attempt_failed": payment.state == PaymentState.FAILED,
                    "can_request_new_link": status in (L.EXPIRED, L.CANCELLED),
                }
            ).data
        )


class LinkCheckoutView(LinkView):
    throttle_classes = [LinkThrottle, PayIpThrottle]

    @extend_schema(
        tags=TAG,
        operation_id="link_checkout",
        summary="Pay a link: start its card payment",
        description="Opens DNA's hosted checkout for the link's payment, once: presses from "
        "the app and from the /pay/ page get the same checkout. 410 once the link is "
        "expired, used or cancelled.",
        parameters=[LINK_TOKEN, IDEMPOTENCY_KEY],
        request=None,
        responses={200: s.CheckoutSerializer, **errors(400, 404, 409, 410, 415, 422, 429, 503)},
        auth=[],
    )
    @idempotent
    def post(self, request, token: str):
        checkout = payment_link_checkout(token=token)
        payment = _link(token).payment
        return Response(s.CheckoutSerializer(checkout_from_cached(checkout, payment)).data)


class LinkReissueView(LinkView):
    @extend_schema(
        tags=TAG,
        operation_id="link_reissue",
        summary="Ask the practice for a new link (expired or cancelled links)",
        description="Raises one task for the practice per link, however often it is asked; "
        "`requested` is false when the link is still usable or was already asked about.",
        parameters=[LINK_TOKEN, IDEMPOTENCY_KEY],
        request=None,
        responses={202: s.ReissueSerializer, **errors(400, 404, 409, 415, 422, 429)},
        auth=[],
    )
    @idempotent
    def post(self, request, token: str):
        requested = payment_link_request_reissue(token=token)
        return Response(s.ReissueSerializer({"requested": requested}).data, status=202)
