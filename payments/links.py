"""The public pay-by-link pages (no login) and the link's own state changes.

GET /pay/<token>/ shows the practice, amount, invoice reference and expiry
(nothing clinical) and a "Pay now" button; POST starts DNA's hosted checkout
for the link's payment and sends the browser there; /pay/<token>/done/ reads
the outcome. An expired, used or cancelled link says so with HTTP 410; an
expired or cancelled one offers to ask the practice for a new link (a task,
once per link).

Only the token's SHA-256 is stored. Starting a checkout locks the payment and
then the link (the same order as a capture, which marks the link used), so two
concurrent "Pay now" presses give one checkout: the second gets the first's,
which is kept in the cache until its token expires.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import wraps

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.actors import Actor
from audit.models import EventType
from integrations.models import Destination
from integrations.outbox import outbox_enqueue
from payments import events, services
from payments.api.throttling import LinkThrottle, PayIpThrottle, throttle_wait
from payments.errors import NotFound, PaymentError
from payments.flows import (
    CheckoutUnavailable,
    LinkUnavailable,
    hash_link_token,
    link_delivery_enqueue,
    online_checkout_start,
    pay_by_link_retry,
    public_url,
)
from payments.locks import lock_payment
from payments.models import PAID_STATES, Payment, PaymentLink, PaymentState, ReasonCode
from payments.permissions import authorise
from practices.roles import Perm

log = structlog.get_logger("payments.links")

S = PaymentState
L = PaymentLink.Status
CHECKOUT_CACHE_SECONDS = 1800
_SCRIPT_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


# --- reads and state changes --------------------------------------------------------


def link_for_token(token: str) -> PaymentLink | None:
    if not token or len(token) > 128:
        return None
    return (
        PaymentLink.objects.select_related("payment", "practice")
        .filter(token_hash=hash_link_token(token))
        .first()
    )


def _lock_link_and_payment(token: str) -> tuple[PaymentLink, Payment]:
    """The patient's link by its token, locked with its payment."""
    found = link_for_token(token)
    if found is None:
        raise NotFound("No such payment link.")
    return _lock_found(found)


def _lock_for_staff(link_id, actor: Actor) -> tuple[PaymentLink, Payment]:
    """A link the practice manages (cancel, resend), locked with its payment.

    Staff need ISSUE_PAY_BY_LINK where the link was issued; the system may act too;
    nobody else (a patient asks the practice instead).
    """
    found = PaymentLink.objects.filter(pk=link_id).first()
    if found is None:
        raise NotFound("No such payment link.")
    authorise(
        actor, Perm.ISSUE_PAY_BY_LINK, found, refusal="This actor cannot manage payment links."
    )
    return _lock_found(found)


def _lock_found(found: PaymentLink) -> tuple[PaymentLink, Payment]:
    """Payment first, then link: the order a capture takes them in."""
    payment = lock_payment(found.payment_id)
    link = PaymentLink.objects.select_for_update().select_related("practice").get(pk=found.pk)
    if link.payment_id != payment.id:  # re-pointed to a retry meanwhile: take the new one
        payment = lock_payment(link.payment_id)
    return link, payment


def _checkout_key(payment: Payment) -> str:
    return f"paylink:checkout:{payment.id}"


@transaction.atomic
def payment_link_checkout(*, token: str) -> dict:
    """Start (or return the already started) hosted checkout for a link; one per payment.

    Returns {"redirect_url", "payment_data_json", "script_url"} for the page.
    Raises LinkUnavailable for an expired, used or cancelled link.
    """
    link, payment = _lock_link_and_payment(token)
    now = timezone.now()
    status = link.effective_status(now)
    if payment.state in PAID_STATES:
        raise LinkUnavailable(link, L.USED)
    if status != L.ACTIVE:
        raise LinkUnavailable(link, status)
    if payment.state == S.VOIDED:
        raise LinkUnavailable(link, L.CANCELLED)
    patient_actor = Actor.for_patient(payment.patient)
    if payment.state == S.FAILED:
        # The last attempt was declined: the link stays usable with a new attempt.
        payment = pay_by_link_retry(payment_id=payment.id, actor=patient_actor).payment
    cached = cache.get(_checkout_key(payment))
    if cached and payment.state == S.AWAITING_CUSTOMER_ACTION:
        return cached
    session = online_checkout_start(
        actor=patient_actor,
        practice=link.practice,
        site=payment.site,
        patient=payment.patient,
        target_type=payment.target_type,
        target_id=payment.target_id,
        amount=payment.amount,
        return_url=public_url(reverse("paylink:done", args=[token])),
        method=payment.method,
        payment=payment,
    )
    checkout = {
        "redirect_url": session.redirect_url,
        "payment_data_json": session.payment_data_json,
        "script_url": session.script_url,
    }
    lifetime = int((session.expires_at - now).total_seconds()) - 60
    cache.set(_checkout_key(payment), checkout, max(1, min(CHECKOUT_CACHE_SECONDS, lifetime)))
    return checkout


@transaction.atomic
def payment_link_request_reissue(*, token: str) -> bool:
    """The patient asks for a new link: one task per link, however often they ask."""
    link = link_for_token(token)
    if link is None:
        raise NotFound("No such payment link.")
    status = link.effective_status(timezone.now())
    if status not in (L.EXPIRED, L.CANCELLED):
        return False
    payment = link.payment
    message = outbox_enqueue(
        destination=Destination.TASK_MANAGER,
        event_type="payment_link.reissue_requested",
        practice_id=link.practice_id,
        payment_id=payment.id,
        payload={
            "task_type": "payment_link_reissue",
            "title": "A patient asked for a new payment link",
            "link_id": str(link.id),
            "link_status": status,
            "payment": events.payment_facts(payment),
        },
        schema_version=events.SCHEMA_VERSION,
        dedupe_key=f"paylink:reissue:{link.id}",
    )
    return message is not None


@transaction.atomic
def payment_link_expire(*, link_id, actor: Actor) -> PaymentLink:
    """Mark an active link past its time as expired (the janitor; the page shows it already)."""
    link = PaymentLink.objects.select_for_update().get(pk=link_id)
    if link.status == L.ACTIVE and link.expires_at <= timezone.now():
        link.status = L.EXPIRED
        link.save(update_fields=["status"])
        log.info("payment_link_expired", link=str(link.id), by=actor.label)
    return link


@transaction.atomic
def payment_link_cancel(*, link_id, actor: Actor) -> PaymentLink:
    """Staff withdraw a link before it is paid; its payment is voided (no money has moved)."""
    link, payment = _lock_for_staff(link_id, actor)
    if link.status == L.CANCELLED:
        return link
    if link.status == L.USED or payment.state in PAID_STATES:
        raise PaymentError("A paid link cannot be cancelled; refund the payment instead.")
    if payment.state in (S.FAILED, S.VOIDED):
        link.status = L.CANCELLED
        link.save(update_fields=["status"])
    else:
        # Voiding cancels the link too, and its audit event says so.
        services.payment_void(
            payment_id=payment.id,
            actor=Actor.system("payment_link_cancel"),
            reason_code=ReasonCode.OTHER,
            notes=f"Payment link cancelled by {actor.label}.",
        )
        link.refresh_from_db(fields=["status"])
    _audit_link(link, payment, actor, EventType.PAYMENT_LINK_CANCELLED)
    return link


@transaction.atomic
def payment_link_resend(*, link_id, actor: Actor) -> PaymentLink:
    """Send the patient the link again, as a new link for the same payment.

    Only the token's hash is kept, so the old URL cannot be sent again: the
    link gets a new token (the old URL stops working) and an expiry no earlier
    than the practice's link lifetime from now, and Communication Hub is asked
    to deliver it on the link's channel. A used, cancelled or paid link cannot
    be resent.
    """
    link, payment = _lock_for_staff(link_id, actor)
    if link.status in (L.USED, L.CANCELLED) or payment.state in PAID_STATES:
        raise PaymentError(
            f"This link is {link.status if link.status != L.ACTIVE else 'paid'}: "
            "issue a new payment instead.",
            code="link_unavailable",
        )
    if payment.state == S.VOIDED:
        raise PaymentError("This payment was voided: issue a new one.", code="link_unavailable")
    now = timezone.now()
    token = secrets.token_urlsafe(32)
    link.token_hash = hash_link_token(token)
    link.status = L.ACTIVE
    link.expires_at = max(
        link.expires_at, now + timedelta(hours=link.practice.payment_link_ttl_hours)
    )
    link.save(update_fields=["token_hash", "status", "expires_at"])
    cache.delete(_checkout_key(payment))  # its return address names the old token
    message = link_delivery_enqueue(link=link, url=public_url(reverse("paylink:pay", args=[token])))
    _audit_link(
        link,
        payment,
        actor,
        EventType.PAYMENT_LINK_RESENT,
        outbox_message_id=str(message.id),
    )
    return link


def _audit_link(link: PaymentLink, payment: Payment, actor: Actor, event_type, **extra) -> None:
    services.payment_audit_record(
        payment,
        actor,
        event_type,
        site_id=link.site_id,
        subject_type="payment_link",
        subject_id=str(link.id),
        payload={
            "channel": link.channel,
            "expires_at": link.expires_at.isoformat(),
            "status": link.status,
            **extra,
        },
    )


# --- views ---------------------------------------------------------------------------


def _page(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    # The token is in the URL: never tell another site. Not "no-referrer": with it a
    # browser sends `Origin: null` on the page's own "Pay now" POST, which CSRF refuses.
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _unavailable(request: HttpRequest, link: PaymentLink, status: str, token: str) -> HttpResponse:
    return _page(
        request,
        "paylink/unavailable.html",
        {
            "link": link,
            "practice_name": link.practice.name,
            "status": status,
            "token": token,
            "can_reissue": status in (L.EXPIRED, L.CANCELLED),
        },
        status=410,
    )


def _not_found(request: HttpRequest) -> HttpResponse:
    return _page(request, "paylink/not_found.html", {}, status=404)


def _refused(request: HttpRequest, error: PaymentError, token: str) -> HttpResponse:
    """Any refusal as a page a patient understands: never a 500, never our internals."""
    if isinstance(error, NotFound):
        return _not_found(request)
    if isinstance(error, LinkUnavailable):
        return _unavailable(request, error.link, error.link_status, token)
    if isinstance(error, CheckoutUnavailable):
        return _page(
            request, "paylink/error.html", {"message": error.message, "token": token}, status=503
        )
    log.info("paylink_refused", code=error.code)
    link = link_for_token(token)
    return _page(
        request,
        "paylink/refused.html",
        {"practice_name": link.practice.name if link else "", "token": token},
        status=error.status if 400 <= error.status < 500 else 400,
    )


def _public(*throttles, on_post=()):
    """A public link page: rate limited per client IP (429 page), refusals shown as pages.

    The counters are the API's (payments.api.throttling, API_THROTTLE_RATES), so
    the page and the app's link endpoints share one budget per address.
    """

    def decorate(view):
        @wraps(view)
        def wrapper(request: HttpRequest, token: str) -> HttpResponse:
            extra = on_post if request.method == "POST" else ()
            wait = throttle_wait(request, (*throttles, *extra))
            if wait is not None:
                response = _page(request, "paylink/rate_limited.html", {}, status=429)
                response["Retry-After"] = str(wait)
                return response
            try:
                return view(request, token)
            except PaymentError as error:
                return _refused(request, error, token)

        return wrapper

    return decorate


@never_cache
@require_http_methods(["GET", "POST"])
@_public(LinkThrottle, on_post=(PayIpThrottle,))
def pay(request: HttpRequest, token: str) -> HttpResponse:
    if request.method == "POST":
        return _start(request, token)
    link = link_for_token(token)
    if link is None:
        return _not_found(request)
    payment = link.payment
    status = link.effective_status(timezone.now())
    if payment.state in PAID_STATES or status == L.USED:
        return _unavailable(request, link, L.USED, token)
    if payment.state == S.VOIDED:
        return _unavailable(request, link, L.CANCELLED, token)
    if status != L.ACTIVE:
        return _unavailable(request, link, status, token)
    return _page(
        request,
        "paylink/pay.html",
        {
            "practice_name": link.practice.name,
            "amount": payment.charge_amount,
            "currency": payment.currency,
            "invoice_reference": payment.pms_invoice_ref,
            "expires_at": link.expires_at,
            "last_attempt_failed": payment.state == S.FAILED,
            "token": token,
        },
    )


def _start(request: HttpRequest, token: str) -> HttpResponse:
    checkout = payment_link_checkout(token=token)
    if checkout["redirect_url"]:
        return redirect(checkout["redirect_url"])
    return _page(
        request,
        "paylink/checkout.html",
        {
            **checkout_script_context(
                script_url=checkout["script_url"],
                payment_data_json=checkout["payment_data_json"],
            ),
            "token": token,
        },
    )


def checkout_script_context(*, script_url: str, payment_data_json: str) -> dict:
    """What templates/dna/_open_payment_page.html needs to open DNA's page with its script.

    Used here and by the virtual terminal's card frame (payments/portal/drawer.py).
    """
    return {
        "script_url": script_url,
        # JSON inside <script>: escape what could end the element (as json_script does).
        "payment_data_script": mark_safe(  # noqa: S308 - escaped here
            payment_data_json.translate(_SCRIPT_ESCAPES)
        ),
        "test_mode": settings.DEBUG or "://test-" in script_url,
    }


@never_cache
@require_GET
@_public(LinkThrottle)
def done(request: HttpRequest, token: str) -> HttpResponse:
    link = link_for_token(token)
    if link is None:
        return _not_found(request)
    payment = link.payment
    if payment.state == S.AWAITING_CUSTOMER_ACTION and cache.add(
        f"paylink:resolve:{payment.id}", 1, 30
    ):
        # Back from DNA before its callback was processed: ask DNA once, soon.
        from integrations.dna.tasks import resolve_payment

        transaction.on_commit(lambda: resolve_payment.delay(str(payment.id)), robust=True)
    return _page(
        request,
        "paylink/done.html",
        {
            "practice_name": link.practice.name,
            "amount": payment.charge_amount,
            "currency": payment.currency,
            "paid": payment.state in PAID_STATES,
            "failed": payment.state == S.FAILED,
            "pending": payment.state not in PAID_STATES and payment.state != S.FAILED,
            "link_active": link.effective_status(timezone.now()) == L.ACTIVE,
            "token": token,
        },
    )


@never_cache
@require_POST
@_public(LinkThrottle)
def reissue(request: HttpRequest, token: str) -> HttpResponse:
    link = link_for_token(token)
    if link is None:
        return _not_found(request)
    payment_link_request_reissue(token=token)
    return _page(
        request, "paylink/reissue_requested.html", {"practice_name": link.practice.name}, status=202
    )


@never_cache
@xframe_options_sameorigin
@require_GET
def complete(request: HttpRequest) -> HttpResponse:
    """Where DNA's embedded page returns (virtual terminal iframe): no details shown."""
    return _page(request, "paylink/complete.html", {})


app_name = "paylink"
urlpatterns = [
    path("complete/", complete, name="complete"),
    path("<str:token>/", pay, name="pay"),
    path("<str:token>/done/", done, name="done"),
    path("<str:token>/reissue/", reissue, name="reissue"),
]
