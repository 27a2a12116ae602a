"""Staff portal views. Thin: parse the form, call a selector or a service, render.

Every page needs a signed-in staff member holding VIEW_PAYMENTS; anything
outside their practices and sites is 'not found'. Domain refusals come back as
form errors a person can act on.
"""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_http_methods, require_POST

from audit.actors import Actor
from audit.models import EventType
from integrations.models import Destination, OutboxMessage
from payments import events, flows, receipts, selectors, services
from payments.errors import NotFound, PaymentError
from payments.models import (
    FINAL_STATES,
    PAID_STATES,
    PRE_CAPTURE_STATES,
    REFUNDABLE_STATES,
    PaymentLink,
    PaymentMethod,
    PaymentState,
)
from payments.portal import charts
from payments.portal.forms import (
    DecisionForm,
    PaymentFilterForm,
    RefundForm,
    RefundLogFilterForm,
    VoidForm,
)
from practices import access
from practices.roles import Perm

S = PaymentState
LIFECYCLE_STEPS = [
    (S.INITIATED, "Initiated"),
    (S.AWAITING_CUSTOMER_ACTION, "Awaiting customer action"),
    (S.AUTHORISED, "Authorised"),
    (S.CAPTURED, "Captured"),
]


def portal_view(view):
    """Signed in, a staff member of some practice, allowed to see payments."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not access.has_perm(request.user, Perm.VIEW_PAYMENTS):
            raise PermissionDenied("Your account has no access to payments.")
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except access.MfaRequired as exc:
            return _step_up(request, exc)

    return wrapper


def _step_up(request, error: access.MfaRequired):
    """Send the person to the MFA step-up page and back (a POST comes back to its form)."""
    target = request.get_full_path()
    if request.method != "GET":
        referer = request.headers.get("Referer", "")
        safe = url_has_allowed_host_and_scheme(
            referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        target = referer if safe and referer else reverse("portal:home")
    messages.warning(request, error.message)
    return redirect(f"{reverse('staff:mfa')}?{urlencode({'next': target})}")


def _apply_error(form, error: PaymentError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, error.message)


def _can(request, perm: Perm, payment) -> bool:
    return access.has_perm(request.user, perm) and access.can_see(
        request.user, practice_id=payment.practice_id, site_id=payment.site_id
    )


@portal_view
def home(request):
    exceptions = selectors.exception_summaries(request.user)
    dashboard = selectors.dashboard_for(request.user)
    return render(
        request,
        "portal/home.html",
        {
            "dashboard": dashboard,
            "charts": charts.dashboard_charts(dashboard),
            "exceptions": exceptions,
            "exceptions_open": any(e.count for e in exceptions),
        },
    )


@portal_view
def payments(request):
    form = PaymentFilterForm(request.GET or None, user=request.user)
    filters = form.filters() if form.is_bound else PaymentFilterForm(user=request.user).filters()
    page, query = keyset_page(
        request, lambda cursor: selectors.payments_page(request.user, filters, cursor=cursor)
    )
    return render(
        request,
        "portal/payments.html",
        {
            "form": form,
            "page": page,
            "query": query,
            "exception_labels": selectors.EXCEPTION_LABELS,
        },
    )


def keyset_page(request, fetch):
    """One page of a keyset-paged list: `fetch(cursor)` with the request's `after` cursor.

    A stale or edited page link (e.g. kept across a change of sort) starts over at the
    first page with a warning. Also returns the query string for the next-page link
    (the filters, without the old cursor).
    """
    try:
        page = fetch(request.GET.get("after"))
    except selectors.InvalidCursor as error:
        messages.warning(request, error.message)
        page = fetch(None)
    query = request.GET.copy()
    query.pop("after", None)
    return page, query.urlencode()


def _detail_context(request, payment):
    state = payment.state
    reached = [s for s, _ in LIFECYCLE_STEPS]
    if state in reached:
        current = reached.index(state)
    elif state in (S.PARTIALLY_REFUNDED, S.REFUNDED, S.RECONCILED):
        current = len(reached) - 1
    else:
        current = -1
    return {
        "payment": payment,
        "steps": [
            {
                "label": label,
                "done": i < current or (i == current and state in FINAL_STATES | {S.CAPTURED}),
                "current": i == current,
            }
            for i, (_s, label) in enumerate(LIFECYCLE_STEPS)
        ],
        "live": state in PRE_CAPTURE_STATES,
        "can_refund": state in REFUNDABLE_STATES and _can(request, Perm.ISSUE_REFUND, payment),
        "can_void": state in PRE_CAPTURE_STATES and _can(request, Perm.ISSUE_VOID, payment),
        "can_retry": state == S.FAILED
        and _can(request, Perm.INITIATE_PAYMENT, payment)
        and flows.retry_available(payment),
    }


def _link_context(request, payment) -> dict:
    """The pay-by-link composer's status: the link's state, expiry, sending, and what may be done."""
    link = PaymentLink.objects.filter(payment=payment).first()
    if link is None:
        return {"link": None}
    status = link.effective_status(timezone.now())
    deliveries = OutboxMessage.objects.filter(
        payment_id=payment.id,
        destination=Destination.COMMUNICATION_HUB,
        event_type=events.LINK_DELIVERY_EVENT,
    ).order_by("-created_at")
    may = _can(request, Perm.ISSUE_PAY_BY_LINK, payment)
    open_ = status in (PaymentLink.Status.ACTIVE, PaymentLink.Status.EXPIRED)
    return {
        "link": link,
        "link_status": PaymentLink.Status(status),
        "link_delivery": deliveries.first(),
        "link_sends": deliveries.count(),
        "can_cancel_link": may and open_ and payment.state not in PAID_STATES,
        "can_resend_link": may and open_ and payment.state not in PAID_STATES | {S.VOIDED},
    }


@portal_view
def payment_detail(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    context = _detail_context(request, payment)
    audit_events = list(selectors.payment_audit_trail(payment))
    context.update(
        {
            "audit_events": audit_events,
            "dispute": next(
                (
                    e
                    for e in reversed(audit_events)
                    if e.event_type == EventType.PAYMENT_EXCEPTION_FLAGGED
                    and e.payload.get("exception") == "disputed"
                ),
                None,
            ),
            "refunds": payment.refunds.order_by("created_at"),
            "receipts": receipts.receipt_messages(payment),
            "can_send_receipt": receipts.receipt_can_resend(payment)
            and _can(request, Perm.INITIATE_PAYMENT, payment),
            **_link_context(request, payment),
        }
    )
    return render(request, "portal/payment_detail.html", context)


STATUS_CHANGED_EVENT = "payment-status-changed"


@portal_view
def payment_status(request, payment_id):
    """The status panel, or one of its parts for htmx.

    `part=text` is polled every 500 ms while the payment is live: 204 (nothing
    to swap) while the state is still the `shown` one, else the new text and an
    HX-Trigger that makes `part=detail` (progress and actions) refresh once. So
    the controls are never replaced while nothing changes and keyboard focus
    stays put, and the live region only speaks when there is news.
    """
    payment = selectors.payment_get_for(request.user, payment_id)
    part = request.GET.get("part")
    if part == "text" and request.GET.get("shown") == payment.state:
        return HttpResponse(status=204)  # the poll's usual answer: before building anything
    context = _detail_context(request, payment)
    if part == "detail":
        return render(request, "portal/_status_detail.html", context)
    if part == "text":
        response = render(request, "portal/_status_text.html", context)
        response["HX-Trigger"] = STATUS_CHANGED_EVENT
        return response
    return render(request, "portal/_status.html", context)


@portal_view
@require_http_methods(["GET", "POST"])
def payment_refund(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    if not _can(request, Perm.ISSUE_REFUND, payment):
        raise PermissionDenied("You cannot refund payments.")
    form = RefundForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            result = services.refund_request(
                payment_id=payment.id,
                actor=Actor.staff(request.user),
                amount=data["amount"] if data["kind"] == "partial" else None,
                reason_code=data["reason_code"],
                notes=data["notes"],
            )
        except PaymentError as error:
            _apply_error(form, error)
        else:
            if result.approval:
                messages.warning(
                    request,
                    f"This refund of £{result.approval.amount} needs approval by a second person. It is in the approvals queue.",
                )
            else:
                messages.success(request, f"Refund of £{result.refund.amount} started.")
            return redirect("portal:payment", payment_id=payment.id)
    return render(
        request,
        "portal/refund.html",
        {"payment": payment, "form": form},
        status=400 if form.errors else 200,
    )


@portal_view
@require_http_methods(["GET", "POST"])
def payment_void(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    if not _can(request, Perm.ISSUE_VOID, payment):
        raise PermissionDenied("You cannot void payments.")
    form = VoidForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.payment_void(
                payment_id=payment.id,
                actor=Actor.staff(request.user),
                reason_code=form.cleaned_data["reason_code"],
                notes=form.cleaned_data["notes"],
            )
        except PaymentError as error:
            _apply_error(form, error)
        else:
            messages.success(request, "Payment voided.")
            return redirect("portal:payment", payment_id=payment.id)
    return render(
        request,
        "portal/void.html",
        {"payment": payment, "form": form},
        status=400 if form.errors else 200,
    )


@portal_view
@require_POST
def payment_retry(request, payment_id):
    payment = selectors.payment_get_for(request.user, payment_id)
    try:
        retry = flows.payment_retry_start(payment_id=payment.id, actor=Actor.staff(request.user))
    except PaymentError as error:
        messages.error(request, error.message)
        return redirect("portal:payment", payment_id=payment.id)
    message = "A new attempt was started for the same amount and target."
    if retry.payment.method == PaymentMethod.PAY_BY_LINK:
        message += (
            " A new payment link was sent to the patient."
            if retry.new_link
            else " The patient's payment link now pays this attempt."
        )
    messages.success(request, message)
    if retry.payment.method == PaymentMethod.VIRTUAL_TERMINAL:
        return redirect("portal:virtual_terminal", payment_id=retry.payment.id)
    return redirect("portal:payment", payment_id=retry.payment.id)


@portal_view
def approvals(request):
    can_decide = access.has_perm(request.user, Perm.APPROVE_REFUND)
    return render(
        request,
        "portal/approvals.html",
        {"approvals": selectors.approvals_pending_for(request.user), "can_decide": can_decide},
    )


@portal_view
@require_POST
def approval_decide(request, approval_id):
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose approve or deny.")
        return redirect("portal:approvals")
    if not selectors.approvals_pending_for(request.user).filter(pk=approval_id).exists():
        raise Http404("No such pending request.")
    actor = Actor.staff(request.user)
    try:
        if form.cleaned_data["decision"] == "grant":
            refund = services.approval_grant(
                approval_id=approval_id, actor=actor, note=form.cleaned_data["note"]
            )
            messages.success(request, f"Approved: the refund of £{refund.amount} has started.")
        else:
            services.approval_deny(
                approval_id=approval_id, actor=actor, note=form.cleaned_data["note"]
            )
            messages.success(request, "Denied: no money moved.")
    except PaymentError as error:
        messages.error(request, error.message)
    return redirect(reverse("portal:approvals"))


@portal_view
def refund_log(request):
    form = RefundLogFilterForm(request.GET or None, user=request.user)
    data = form.cleaned_data if form.is_bound and form.is_valid() else {}
    filters = dict(
        actor_id=data.get("actor", ""),
        date_from=data.get("date_from"),
        date_to=data.get("date_to"),
        reason_code=data.get("reason_code", ""),
    )
    page, query = keyset_page(
        request,
        lambda cursor: selectors.refund_void_log_page(request.user, cursor=cursor, **filters),
    )
    return render(request, "portal/refund_log.html", {"form": form, "page": page, "query": query})
