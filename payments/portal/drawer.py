"""The Payment Drawer (§5.1): take a payment for a patient, appointment or invoice.

Opened from the PMS context (`/drawer/?patient=<id>&target_type=invoice&
target_id=INV-1&total=120.00`), it offers the amount (invoice total, part, or
another amount), the methods the person may use (virtual terminal only for its
role), the site's terminals, and splits. Card details are never typed here:
the terminal, the patient's own device or provider-hosted fields take them.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_http_methods, require_POST

from audit.actors import Actor
from payments import flows, selectors, services
from payments.errors import PaymentError
from payments.links import checkout_script_context
from payments.models import OFFLINE_METHODS, Payment, PaymentMethod, PaymentState, SplitPayment
from payments.portal.forms import DrawerForm, SplitForm, SplitTenderForm
from payments.portal.views import _apply_error, _detail_context, portal_view
from payments.services import TenderSpec
from practices import access
from practices.models import Patient, Site
from practices.roles import Perm
from terminals.models import Terminal

S = PaymentState


def _patient(request, patient_id) -> Patient:
    try:
        return Patient.objects.get(
            pk=patient_id, practice_id__in=access.practice_ids_for(request.user)
        )
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise Http404("No such patient.") from None


def _sites(request, patient):
    return list(
        Site.objects.filter(
            practice=patient.practice, id__in=access.site_ids_for(request.user)
        ).order_by("name")
    )


def _terminals(sites):
    return list(
        Terminal.objects.filter(site__in=sites, active=True)
        .select_related("site")
        .order_by("site__name", "label")
    )


def _methods(request, patient):
    """The methods this person may use here: the virtual terminal only for its role (§9)."""
    user = request.user
    choices = []
    if access.has_perm(user, Perm.INITIATE_PAYMENT):
        choices.append(("terminal", "Card on a terminal"))
    if access.has_perm(user, Perm.ISSUE_PAY_BY_LINK):
        choices.append(("pay_by_link", "Pay-by-link (sent to the patient)"))
    if (
        access.has_perm(user, Perm.USE_VIRTUAL_TERMINAL)
        and patient.practice.virtual_terminal_enabled
    ):
        choices.append(("virtual_terminal", "Virtual terminal (phone payment)"))
    if access.has_perm(user, Perm.INITIATE_PAYMENT):
        choices += [("cash", "Cash"), ("voucher", "Voucher")]
    return choices


def _initial(request) -> dict:
    initial = {
        "target_type": request.GET.get("target_type", "invoice"),
        "target_id": request.GET.get("target_id", ""),
    }
    try:
        total = Decimal(request.GET.get("total", ""))
    except InvalidOperation:
        total = None
    if total and total > 0:
        initial["invoice_total"] = total.quantize(Decimal("0.01"))
        initial["amount_choice"] = "total"
    else:
        initial["amount_choice"] = "custom"
    return initial


@portal_view
@require_http_methods(["GET", "POST"])
def drawer(request, patient_id):
    patient = _patient(request, patient_id)
    sites = _sites(request, patient)
    if not sites:
        raise Http404("You have no site at this patient's practice.")
    terminals = _terminals(sites)
    methods = _methods(request, patient)
    form_kwargs = dict(user=request.user, methods=methods, sites=sites, terminals=terminals)
    form = DrawerForm(request.POST or None, initial=_initial(request), **form_kwargs)
    if request.method == "POST" and form.is_valid():
        try:
            return _take(request, form.cleaned_data, patient, sites, terminals)
        except PaymentError as error:
            _apply_error(form, error)
    return render(
        request,
        "portal/drawer.html",
        {"patient": patient, "form": form, "methods": methods, "terminals": terminals},
        status=400 if form.errors else 200,
    )


def _take(request, data, patient, sites, terminals):
    actor = Actor.staff(request.user)
    site = next(s for s in sites if str(s.id) == data["site"])
    common = dict(
        actor=actor,
        practice=patient.practice,
        site=site,
        patient=patient,
        target_type=data["target_type"],
        target_id=data["target_id"],
        amount=data["amount"],
    )
    method = data["method"]
    if method == PaymentMethod.VIRTUAL_TERMINAL:
        session = flows.virtual_terminal_open(**common)
        return redirect("portal:virtual_terminal", payment_id=session.payment.id)
    terminal = None
    if method == PaymentMethod.TERMINAL:
        terminal = next((t for t in terminals if str(t.id) == data["terminal"]), None)
        if terminal is None or terminal.site_id != site.id:
            raise PaymentError("Choose a terminal at the chosen site.", field="terminal")
    payment = flows.collection_start(
        method=method,
        terminal=terminal,
        channel=data.get("channel") or "app",
        due_at=data.get("due_at"),
        **common,
    )
    if method == PaymentMethod.TERMINAL:
        messages.info(request, f"Sent to {terminal.label}. Ask the patient to follow the terminal.")
    elif method == PaymentMethod.PAY_BY_LINK:
        link = payment.link
        due = f" Due by {payment.due_at:%d %b %Y}." if payment.due_at else ""
        messages.success(
            request,
            f"Payment link queued for sending by {link.get_channel_display()} "
            f"(Communication Hub sends it). It expires {link.expires_at:%d %b %Y %H:%M} UTC.{due}",
        )
    else:
        messages.success(request, f"{PaymentMethod(method).label} payment recorded.")
    return redirect("portal:payment", payment_id=payment.id)


# --- Virtual terminal -------------------------------------------------------------


def _vt_payment(request, payment_id) -> Payment:
    payment = selectors.payment_get_for(request.user, payment_id)
    if payment.method != PaymentMethod.VIRTUAL_TERMINAL or not access.has_perm(
        request.user, Perm.USE_VIRTUAL_TERMINAL
    ):
        raise Http404("Not a virtual terminal payment.")
    return payment


@portal_view
def virtual_terminal(request, payment_id):
    """The phone payment page: DNA's card page in a frame while card entry is open.

    The call-recording banner follows the session's real state (its audited
    steps): open means muted. A closed session offers "Reopen card entry".
    """
    payment = _vt_payment(request, payment_id)
    is_open = payment.state in (S.INITIATED, S.AWAITING_CUSTOMER_ACTION)
    session_open = is_open and flows.virtual_terminal_session_open(payment)
    if session_open:
        access.require_recent_mfa(request.user, payment.practice)  # before the frame asks
    context = _detail_context(request, payment)
    context.update(
        {
            "open": is_open,
            "session_open": session_open,
            "telephony": payment.practice.telephony_enabled,
            "recording_muted": session_open and payment.practice.telephony_enabled,
        }
    )
    return render(request, "portal/virtual_terminal.html", context)


@xframe_options_sameorigin
@never_cache
@portal_view
def virtual_terminal_card(request, payment_id):
    """The frame: a page of ours that opens DNA's card page with DNA's script and the token.

    In "redirect" mode (the simulator) it goes straight to the page DNA's script
    would open. Nothing here takes a card detail.
    """
    payment = _vt_payment(request, payment_id)
    try:
        session = flows.virtual_terminal_session(payment=payment, actor=Actor.staff(request.user))
    except PaymentError as error:
        return render(
            request,
            "portal/virtual_terminal_card.html",
            {"error": error.message},
            status=error.status,
        )
    if session.redirect_url:
        return redirect(session.redirect_url)
    return render(
        request,
        "portal/virtual_terminal_card.html",
        checkout_script_context(
            script_url=session.script_url, payment_data_json=session.payment_data_json
        ),
    )


@portal_view
@require_POST
def virtual_terminal_reopen(request, payment_id):
    payment = _vt_payment(request, payment_id)
    try:
        flows.virtual_terminal_reopen(payment_id=payment.id, actor=Actor.staff(request.user))
    except PaymentError as error:
        messages.error(request, error.message)
        return redirect("portal:payment", payment_id=payment.id)
    return redirect("portal:virtual_terminal", payment_id=payment.id)


@portal_view
@require_POST
def virtual_terminal_close(request, payment_id):
    """ "Close without taking payment", or the page's beacon when staff leave it (204)."""
    payment = selectors.payment_get_for(request.user, payment_id)
    beacon = request.POST.get("beacon") == "1"
    try:
        flows.virtual_terminal_close(
            payment_id=payment.id,
            actor=Actor.staff(request.user),
            reason="abandoned" if beacon else "cancelled",
        )
    except PaymentError as error:
        if beacon:
            return HttpResponse(status=409)
        messages.error(request, error.message)
    if beacon:
        return HttpResponse(status=204)
    return redirect("portal:payment", payment_id=payment.id)


# --- Split payments ------------------------------------------------------------------


@portal_view
@require_http_methods(["GET", "POST"])
def split_new(request, patient_id):
    patient = _patient(request, patient_id)
    sites = _sites(request, patient)
    if not sites:
        raise Http404("You have no site at this patient's practice.")
    terminals = _terminals(sites)
    initial = _initial(request)
    if "invoice_total" in initial:
        initial["amount_due"] = initial["invoice_total"]
    form = SplitForm(request.POST or None, initial=initial, sites=sites, terminals=terminals)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        site = next(s for s in sites if str(s.id) == data["site"])
        by_id = {str(t.id): t for t in terminals}
        try:
            split = services.split_create(
                actor=Actor.staff(request.user),
                practice=patient.practice,
                site=site,
                patient=patient,
                target_type=data["target_type"],
                target_id=data["target_id"],
                amount_due=data["amount_due"],
                tenders=[
                    TenderSpec(method, amount, by_id.get(terminal or ""))
                    for method, amount, terminal in data["tenders"]
                ],
            )
        except PaymentError as error:
            _apply_error(form, error)
        else:
            return redirect("portal:split", split_id=split.id)
    return render(
        request,
        "portal/split_new.html",
        {"patient": patient, "form": form},
        status=400 if form.errors else 200,
    )


def _split_for(request, split_id) -> SplitPayment:
    try:
        return (
            access.scope(SplitPayment.objects.all(), request.user)
            .select_related("patient", "site")
            .get(pk=split_id)
        )
    except (SplitPayment.DoesNotExist, ValueError):
        raise Http404("No such split payment.") from None


SPLIT_CHANGED_EVENT = "split-changed"
SPLIT_ACTION_EVENT = "split-action"
SPLIT_LIVE_STATES = (S.INITIATED, S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED)


def _split_context(split: SplitPayment) -> dict:
    tenders = list(
        Payment.objects.filter(split=split)
        .select_related("terminal")
        .annotate(has_retry=Exists(Payment.objects.filter(retry_of=OuterRef("pk"))))
        .order_by("created_at")
    )
    for t in tenders:
        t.can_retry = flows.retry_available(t, retried=t.has_retry)
    remaining = services.split_remaining(split)
    uncovered = services.split_uncovered(split)
    shown = "|".join([split.status, str(remaining), *(f"{t.id}={t.state}" for t in tenders)])
    return {
        "split": split,
        "tenders": tenders,
        "remaining": remaining,
        "live": any(t.state in SPLIT_LIVE_STATES for t in tenders),
        "uncovered": uncovered,
        # What the page shows, in short: the poll answers 204 while it is unchanged.
        "signature": hashlib.sha256(shown.encode()).hexdigest()[:16],
    }


@portal_view
def split_detail(request, split_id):
    """The split page, or one of its parts for htmx (as `payment_status`: text polled, table on change)."""
    split = _split_for(request, split_id)
    context = _split_context(split)
    part = request.GET.get("part")
    if part == "text":
        if request.GET.get("shown") == context["signature"]:
            return HttpResponse(status=204)
        response = render(request, "portal/_split_text.html", context)
        response["HX-Trigger"] = SPLIT_CHANGED_EVENT
        return response
    context["tender_form"] = _tender_form(split, context)
    if part == "table":
        return render(request, "portal/_split_table.html", context)
    return render(request, "portal/split.html", context)


def _tender_form(split: SplitPayment, context: dict, data=None) -> SplitTenderForm | None:
    """The "Add a tender" form while part of an open split is covered by no live tender."""
    if split.status != SplitPayment.Status.OPEN or context["uncovered"] <= 0:
        return None
    return SplitTenderForm(data, terminals=_terminals([split.site]), uncovered=context["uncovered"])


@portal_view
@require_POST
def split_tender_add(request, split_id):
    """Add a tender for what no live tender covers; errors are shown on the split page."""
    split = _split_for(request, split_id)
    context = _split_context(split)
    form = _tender_form(split, context, request.POST)
    if form is None:
        messages.error(request, "Every part of this split payment already has a tender.")
        return redirect("portal:split", split_id=split.id)
    if form.is_valid():
        data = form.cleaned_data
        terminal = form.terminals.get(data["terminal"])
        try:
            tender = services.split_add_tender(
                split_id=split.id,
                actor=Actor.staff(request.user),
                method=data["method"],
                amount=data["amount"],
                terminal=terminal if data["method"] == PaymentMethod.TERMINAL else None,
            )
        except PaymentError as error:
            _apply_error(form, error)
        else:
            messages.success(
                request,
                f"{tender.get_method_display()} tender of £{tender.amount} added.",
            )
            return redirect("portal:split", split_id=split.id)
    context["tender_form"] = form
    return render(request, "portal/split.html", context, status=400)


@portal_view
@require_POST
def split_tender_action(request, split_id, payment_id):
    """Record a tender received, send it to its terminal, or retry it.

    From htmx the answer is only an error to show (or nothing) and an event
    that makes the status text poll at once; without JavaScript, back to the page.
    """
    split = _split_for(request, split_id)
    tender = Payment.objects.filter(split=split, pk=payment_id).first()
    if tender is None:
        raise Http404("No such tender.")
    actor = Actor.staff(request.user)
    action = request.POST.get("action")
    error = None
    try:
        if action == "received" and tender.method in OFFLINE_METHODS:
            services.tender_record_received(payment_id=tender.id, actor=actor)
        elif action == "send" and tender.method == PaymentMethod.TERMINAL:
            flows.terminal_payment_send(payment_id=tender.id, actor=actor)
        elif action == "retry" and tender.state == S.FAILED:
            flows.payment_retry_start(payment_id=tender.id, actor=actor)
        else:
            error = "That action is not available for this tender."
    except PaymentError as exc:
        error = exc.message
    if request.htmx:
        response = render(request, "portal/_split_message.html", {"error": error})
        response["HX-Trigger"] = SPLIT_ACTION_EVENT
        return response
    if error:
        messages.error(request, error)
    return redirect("portal:split", split_id=split.id)


# --- Finding the patient (the PMS usually opens the drawer with one) ------------------


@portal_view
def patients(request):
    q = request.GET.get("q", "").strip()
    return render(
        request,
        "portal/patients.html",
        {"patients": selectors.patients_with_badges(request.user, q=q), "q": q},
    )
