"""Payment flows that reach DNA Payments: terminal, online checkout, pay-by-link, virtual terminal.

These are the stable entry points the staff portal and the patient API build
on; their signatures are a contract. Each creates the payment through
`payments.services` (which checks the actor's permission and the billable
target) and then talks to DNA through `integrations.dna` — after commit, and
never inside a long transaction. Outcomes arrive later, by webhook or through
the janitor (docs/providers.md).

- `terminal_payment_start` → the payment is `initiated`; a task sends the axept
  transaction and moves it to `awaiting_customer_action` once the terminal has it.
- `online_checkout_start` → a `CheckoutSession` for DNA's hosted page; the
  payment is `awaiting_customer_action`.
- `pay_by_link_issue` → our own one-time link (payments/links.py serves it).
- `virtual_terminal_open` / `virtual_terminal_reopen` / `virtual_terminal_close`
  → a MOTO checkout in an iframe, muting call recording while card entry is
  open (the session's audited steps say whether it is).
- `collection_start` → the desk's and the tablet's "take a payment": routes a
  terminal, pay-by-link, cash or voucher payment to its flow.
- `payment_retry_start` → the retry of a failed payment, by its method's path.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.dna.client import DnaClient, DnaError, encode_json
from integrations.dna.operations import TERMINAL_SALE
from integrations.dna.types import CheckoutRequest
from integrations.models import Destination
from integrations.outbox import outbox_enqueue
from payments import events, services
from payments.errors import InvalidTransition, NotFound, PaymentError
from payments.locks import lock_payment
from payments.models import (
    OFFLINE_METHODS,
    Payment,
    PaymentLink,
    PaymentMethod,
    PaymentState,
    Provider,
)
from practices import access
from practices.models import Patient, Practice, Site
from practices.roles import Perm
from terminals.models import Terminal

S = PaymentState
CHECKOUT_METHODS = frozenset(
    {PaymentMethod.ONLINE, PaymentMethod.PAY_BY_LINK, PaymentMethod.VIRTUAL_TERMINAL}
)
WALLETS = ("googlepay", "applepay")
MAX_LINK_TTL_HOURS = 24 * 30


class CheckoutUnavailable(PaymentError):
    """DNA could not start the checkout now; the payment is unchanged and may be retried."""

    code = "provider_unavailable"
    status = 503


class LinkUnavailable(PaymentError):
    """The link can no longer be used to pay (expired, used or cancelled)."""

    code = "link_unavailable"
    status = 410

    def __init__(self, link: PaymentLink, status: str):
        super().__init__(f"This payment link is {status}.")
        self.link = link
        self.link_status = status


@dataclass(frozen=True)
class CheckoutSession:
    """What a page needs to open DNA's hosted checkout for one payment.

    `payment_data` is DNA's paymentData for `window.DNAPayments.openPaymentPage`
    (it includes the `auth` token bound to this invoiceId, amount, currency and
    terminal); load `script_url` first. `redirect_url` is set only when
    DNA_CHECKOUT_MODE is "redirect" (the simulator): a browser can go straight there.
    """

    payment: Payment
    payment_data: dict
    script_url: str
    redirect_url: str | None
    expires_at: datetime

    @property
    def payment_data_json(self) -> str:
        """paymentData as JSON text, amounts as exact numbers (for a <script> block)."""
        return encode_json(self.payment_data)


@dataclass(frozen=True)
class IssuedLink:
    link: PaymentLink
    url: str
    token: str  # shown once; only its SHA-256 is stored


def public_url(path: str) -> str:
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def hash_link_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- terminal -------------------------------------------------------------------


def terminal_payment_start(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount,
    terminal: Terminal,
    pms_invoice_ref: str = "",
    rewards_credit: services.RewardsCredit | None = None,
) -> Payment:
    """Create a terminal payment; after commit a task shows it on the terminal.

    The axept uti is the payment id and the reference its hex (no personal
    data). A definite refusal fails the payment with the reason; an unknown
    outcome is resolved by the janitor asking DNA, never by guessing.
    """
    with transaction.atomic():
        payment = services.payment_create(
            actor=actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=target_type,
            target_id=target_id,
            amount=amount,
            method=PaymentMethod.TERMINAL,
            terminal=terminal,
            pms_invoice_ref=pms_invoice_ref,
            rewards_credit=rewards_credit,
        )
        services.provider_operation_request(payment_id=payment.id, operation=TERMINAL_SALE)
    return payment


def _retry_by_method(payment_id, actor: Actor, method: str, name: str) -> Payment:
    """The new attempt of a failed `name` payment (the caller's transaction)."""
    failed = lock_payment(payment_id)
    if failed.method != method:
        raise PaymentError(f"Only {name} payments are retried here.", code="method_not_allowed")
    return services.payment_retry(payment_id=payment_id, actor=actor)


def terminal_payment_retry(*, payment_id, actor: Actor) -> Payment:
    """The retry path of a failed terminal payment: a new attempt, sent to the terminal."""
    with transaction.atomic():
        payment = _retry_by_method(payment_id, actor, PaymentMethod.TERMINAL, "terminal")
        if payment.terminal is None:
            raise PaymentError(
                "The terminal of the failed payment is no longer active; start a new payment.",
                code="terminal_required",
            )
        services.provider_operation_request(payment_id=payment.id, operation=TERMINAL_SALE)
    return payment


def terminal_payment_send(*, payment_id, actor: Actor) -> Payment:
    """Send an existing initiated terminal payment (a split tender) to its terminal, once."""
    with transaction.atomic():
        payment = lock_payment(payment_id)
        if payment.method != PaymentMethod.TERMINAL or payment.terminal is None:
            raise PaymentError(
                "Only terminal payments go to a terminal.", code="method_not_allowed"
            )
        if actor.kind == "staff":
            access.require(
                actor.user,
                Perm.INITIATE_PAYMENT,
                practice_id=payment.practice_id,
                site_id=payment.site_id,
            )
        if payment.state != S.INITIATED:
            raise InvalidTransition("This payment has already been sent to the terminal.")
        services.provider_operation_request(payment_id=payment.id, operation=TERMINAL_SALE)
    return payment


# --- online checkout ----------------------------------------------------------------


def _check_reuse(payment: Payment, *, actor: Actor, practice: Practice, method: str, amount):
    """A given payment may be reopened by whoever could have started it, unchanged."""
    payment = Payment.objects.select_related("practice", "site").get(pk=payment.pk)
    if payment.practice_id != practice.id:
        raise NotFound("No such payment.")
    if payment.method != method:
        raise PaymentError("The payment was started with another method.", code="invalid_method")
    if services.money(amount) != payment.amount:
        raise PaymentError("The amount differs from the payment's.", code="invalid_amount")
    if payment.state not in (S.INITIATED, S.AWAITING_CUSTOMER_ACTION):
        raise InvalidTransition(
            f"A {payment.get_state_display().lower()} payment cannot be checked out again."
        )
    if actor.kind == "staff":
        access.require(
            actor.user,
            Perm.INITIATE_PAYMENT,
            practice_id=payment.practice_id,
            site_id=payment.site_id,
        )
    elif actor.kind == "patient":
        if actor.patient is None or actor.patient.pk != payment.patient_id:
            raise NotFound("No such payment.")
    elif actor.kind != "system":
        raise PaymentError("This actor cannot take payments.", code="permission_denied")
    return payment


def _open_checkout(
    payment: Payment, actor: Actor, *, return_url: str, embedded: bool
) -> CheckoutSession:
    """Get DNA's bound token and paymentData, then mark the payment as presented."""
    practice = payment.practice
    description = practice.name
    if payment.pms_invoice_ref:
        description = f"{practice.name}, invoice {payment.pms_invoice_ref}"
    callback = public_url(reverse("dna-callback"))
    request = CheckoutRequest(
        invoice_id=str(payment.id),
        amount=payment.charge_amount,
        currency=payment.currency,
        terminal_id=practice.dna_terminal_id or settings.DNA_TERMINAL_ID,
        description=description[:200],
        return_url=return_url,
        failure_return_url=return_url,
        callback_url=callback,
        failure_callback_url=callback,
        transaction_type="SALE" if payment.moto else settings.DNA_ONLINE_TRANSACTION_TYPE,
        wallets=WALLETS if practice.wallets_enabled and not payment.moto else (),
        embedded=embedded,
        moto=payment.moto,
    )
    try:
        with DnaClient() as dna:
            checkout = dna.hosted_checkout(request)
    except DnaError as error:
        raise CheckoutUnavailable(
            "The card payment page cannot be opened right now. Please try again in a moment."
        ) from error
    outcome = services.payment_await_customer(payment_id=payment.id, actor=actor)
    return CheckoutSession(
        payment=outcome.payment,
        payment_data=checkout.payment_data,
        script_url=checkout.script_url,
        redirect_url=checkout.redirect_url,
        expires_at=checkout.expires_at,
    )


def online_checkout_start(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount,
    return_url: str,
    method: str = PaymentMethod.ONLINE,
    pms_invoice_ref: str = "",
    rewards_credit: services.RewardsCredit | None = None,
    payment: Payment | None = None,
) -> CheckoutSession:
    """Start (or reopen) DNA's hosted checkout for an online, pay-by-link or VT payment.

    invoiceId is the payment id. Wallet buttons are offered when the practice
    enables them. `payment` reuses an existing initiated (or already presented)
    payment, e.g. a retry or a pay-by-link payment; the other arguments must
    then agree with it. The DNA callback completes the payment. Raises
    CheckoutUnavailable (503) when DNA cannot be reached; the payment stays as
    it was, and the janitor fails an abandoned one.
    """
    if method not in CHECKOUT_METHODS:
        raise PaymentError("This method has no hosted checkout.", code="invalid_method")
    if payment is None:
        payment = services.payment_create(
            actor=actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=target_type,
            target_id=target_id,
            amount=amount,
            method=method,
            pms_invoice_ref=pms_invoice_ref,
            rewards_credit=rewards_credit,
        )
    else:
        payment = _check_reuse(
            payment, actor=actor, practice=practice, method=method, amount=amount
        )
    return _open_checkout(
        payment,
        actor,
        return_url=return_url,
        embedded=payment.method == PaymentMethod.VIRTUAL_TERMINAL,
    )


# --- pay-by-link ----------------------------------------------------------------------


def link_ttl_hours_for_due(practice: Practice, due_at: datetime) -> int:
    """A link with a due date stays payable until the practice's last overdue reminder.

    Otherwise the reminders of an unpaid link would point the patient at a dead link.
    """
    last_reminder = due_at + timedelta(days=practice.reminder_days()[-1])
    hours = math.ceil((last_reminder - timezone.now()).total_seconds() / 3600)
    return max(1, min(hours, MAX_LINK_TTL_HOURS))


def _channels(first: str) -> list[str]:
    """Delivery order: the chosen channel, then app, email, SMS (push first, then fallbacks)."""
    order = [PaymentLink.Channel.APP, PaymentLink.Channel.EMAIL, PaymentLink.Channel.SMS]
    return [first, *(str(c) for c in order if c != first)]


def _link_ttl(practice: Practice, ttl_hours: int | None) -> int:
    ttl = practice.payment_link_ttl_hours if ttl_hours is None else ttl_hours
    if not isinstance(ttl, int) or not 1 <= ttl <= MAX_LINK_TTL_HOURS:
        raise PaymentError(
            f"A link lasts between 1 and {MAX_LINK_TTL_HOURS} hours.", code="invalid_ttl"
        )
    return ttl


@transaction.atomic
def pay_by_link_issue(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount,
    channel: str = PaymentLink.Channel.APP,
    pms_invoice_ref: str = "",
    ttl_hours: int | None = None,
    due_at: datetime | None = None,
) -> IssuedLink:
    """Create a pay-by-link payment and its one-time link, and ask Communication Hub to send it.

    The raw token is returned once (in `url` and `token`); only its SHA-256 is
    stored on the link. The delivery message carries the URL, amount, practice
    name and expiry: nothing clinical. With a `due_at`, the payment is due then
    (`services.payment_set_due`): unpaid after it, it becomes an overdue
    balance, reminded on the practice's schedule while the link stays payable.
    """
    if channel not in PaymentLink.Channel.values:
        raise PaymentError("Send the link by app, email or SMS.", code="invalid_channel")
    if due_at is not None:
        if timezone.is_naive(due_at):
            raise PaymentError(
                "Due dates carry a time zone.", code="invalid_due_at", field="due_at"
            )
        if actor.is_staff and due_at <= timezone.now():
            raise PaymentError(
                "The due date must be in the future.", code="invalid_due_at", field="due_at"
            )
        if ttl_hours is None:
            ttl_hours = link_ttl_hours_for_due(practice, due_at)
    ttl = _link_ttl(practice, ttl_hours)
    payment = services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=target_type,
        target_id=target_id,
        amount=amount,
        method=PaymentMethod.PAY_BY_LINK,
        pms_invoice_ref=pms_invoice_ref,
    )
    if due_at is not None:
        payment = services.payment_set_due(payment_id=payment.id, actor=actor, due_at=due_at)
    return _link_send(payment, actor, channel=channel, ttl=ttl)


def _link_send(
    payment: Payment, actor: Actor, *, channel: str, ttl: int, replaces: PaymentLink | None = None
) -> IssuedLink:
    """Give an initiated pay-by-link payment its link, audit it and queue its delivery."""
    practice = payment.practice
    payment = services.payment_await_customer(payment_id=payment.id, actor=actor).payment
    token = secrets.token_urlsafe(32)
    link = PaymentLink.objects.create(
        practice=practice,
        site_id=payment.site_id,
        payment=payment,
        token_hash=hash_link_token(token),
        channel=channel,
        expires_at=timezone.now() + timedelta(hours=ttl),
        created_by=actor.user if actor.is_staff else None,
    )
    url = public_url(reverse("paylink:pay", args=[token]))
    payload = {"channel": channel, "expires_at": link.expires_at.isoformat()}
    if replaces is not None:
        payload["replaces_link_id"] = str(replaces.id)
    services.payment_audit_record(
        payment,
        actor,
        EventType.PAYMENT_LINK_ISSUED,
        subject_type="payment_link",
        subject_id=str(link.id),
        payload=payload,
    )
    link_delivery_enqueue(link=link, url=url, dedupe_key=f"paylink:deliver:{link.id}")
    return IssuedLink(link=link, url=url, token=token)


def link_delivery_enqueue(*, link: PaymentLink, url: str, dedupe_key: str | None = None):
    """Ask Communication Hub to send the link (in the caller's transaction): nothing clinical."""
    payment = link.payment
    return outbox_enqueue(
        destination=Destination.COMMUNICATION_HUB,
        event_type=events.LINK_DELIVERY_EVENT,
        practice_id=link.practice_id,
        payment_id=payment.id,
        payload={
            "link_id": str(link.id),
            "payment_id": str(payment.id),
            "patient_id": str(payment.patient_id),
            "practice_id": str(link.practice_id),
            "practice_name": link.practice.name,
            "site_id": str(link.site_id),
            "url": url,
            "amount": str(payment.charge_amount),
            "currency": payment.currency,
            "invoice_reference": payment.pms_invoice_ref or None,
            "expires_at": link.expires_at.isoformat(),
            "channels": _channels(link.channel),
        },
        schema_version=events.SCHEMA_VERSION,
        dedupe_key=dedupe_key,
    )


@dataclass(frozen=True)
class LinkRetry:
    """A new attempt for a failed link payment, and the link that now pays it."""

    payment: Payment
    link: PaymentLink
    new_link: bool  # True: a fresh link was issued and sent; False: the patient's link took over


@transaction.atomic
def pay_by_link_retry(*, payment_id, actor: Actor) -> LinkRetry:
    """A new attempt for a failed pay-by-link payment, payable through a link.

    While the failed attempt's link is active it moves to the new attempt, so
    the message the patient has keeps working. Otherwise (expired, cancelled,
    never had one) a fresh link is issued and sent, by staff or a system
    trigger: a patient asks the practice for one instead. The failed attempt
    keeps its history (the new one's `retry_of`, the audit trail).
    Payment first, then link: the order a capture takes them in.
    """
    failed = lock_payment(payment_id)
    if failed.method != PaymentMethod.PAY_BY_LINK:
        raise PaymentError("Only pay-by-link payments are retried here.", code="method_not_allowed")
    link = PaymentLink.objects.select_for_update().filter(payment=failed).first()
    status = link.effective_status(timezone.now()) if link is not None else None
    active = status == PaymentLink.Status.ACTIVE
    if not active and actor.kind == "patient":
        if link is None:
            raise NotFound("No such payment link.")
        raise LinkUnavailable(link, status)
    payment = services.payment_retry(payment_id=failed.id, actor=actor)
    if active:
        link.payment = payment
        link.save(update_fields=["payment"])
        payment = services.payment_await_customer(payment_id=payment.id, actor=actor).payment
        return LinkRetry(payment=payment, link=link, new_link=False)
    issued = _link_send(
        payment,
        actor,
        channel=link.channel if link is not None else PaymentLink.Channel.APP,
        ttl=(
            link_ttl_hours_for_due(payment.practice, payment.due_at)
            if payment.due_at is not None
            else _link_ttl(payment.practice, None)
        ),
        replaces=link,
    )
    return LinkRetry(payment=issued.link.payment, link=issued.link, new_link=True)


# --- virtual terminal (MOTO) -----------------------------------------------------------

VT_OPENED, VT_CLOSED = "opened", "closed"
VT_CLOSE_REASONS = ("completed", "cancelled", "abandoned")


def _vt_steps(payment_id) -> list[tuple[str, datetime]]:
    """The session's audited steps, in order: the one record of whether it is open."""
    return list(
        AuditEvent.objects.filter(
            payment_id=payment_id, event_type=EventType.VIRTUAL_TERMINAL_SESSION
        )
        .order_by("seq")
        .values_list("payload__action", "occurred_at")
    )


def virtual_terminal_session_open(payment: Payment) -> bool:
    """Whether card entry is open now (and call recording muted, with telephony on)."""
    steps = _vt_steps(payment.id)
    return bool(steps) and steps[-1][0] == VT_OPENED


def _vt_session_event(payment: Payment, actor: Actor, action: str, reason: str = "") -> None:
    """Audit the session step and, with telephony on, tell it to (un)mute call recording.

    Each opening starts a numbered session; its mute and unmute carry the number,
    so a reopened session mutes again while a repeated step cannot write twice.
    """
    session = sum(1 for step, _at in _vt_steps(payment.id) if step == VT_OPENED)
    if action == VT_OPENED:
        session += 1
    services.payment_audit_record(
        payment,
        actor,
        EventType.VIRTUAL_TERMINAL_SESSION,
        payload={
            "action": action,
            "reason": reason,
            "payment_state": payment.state,
            "session": session,
        },
    )
    if payment.practice.telephony_enabled:
        event_type = "call_recording.mute" if action == VT_OPENED else "call_recording.unmute"
        outbox_enqueue(
            destination=Destination.TELEPHONY,
            event_type=event_type,
            practice_id=payment.practice_id,
            payment_id=payment.id,
            payload={
                "payment_id": str(payment.id),
                "staff_id": str(payment.initiated_by_user_id or ""),
                "site_id": str(payment.site_id),
                "practice_id": str(payment.practice_id),
                "reason": reason or None,
                "session": session,
            },
            schema_version=events.SCHEMA_VERSION,
            dedupe_key=f"telephony:{event_type}:{payment.id}:{session}",
        )


def virtual_terminal_open(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount,
    pms_invoice_ref: str = "",
) -> CheckoutSession:
    """Open a phone (MOTO) payment in DNA's embedded page; mutes call recording first.

    Needs Perm.USE_VIRTUAL_TERMINAL (checked by services.payment_create). The
    checkout is flagged MOTO: `"channel": "moto"` in merchantCustomData (DNA
    echoes it in the callback) and the payment's `moto` field. Card details are
    typed only into DNA's page, framed in the staff page (the portal's card
    frame opens it with DNA's script). The session closes (unmute) when the
    outcome arrives by webhook, by `virtual_terminal_close` (staff close or
    leave the page), or when the janitor finds it open for longer than
    DNA_VIRTUAL_TERMINAL_ABANDON_SECONDS.
    """
    with transaction.atomic():
        payment = services.payment_create(
            actor=actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=target_type,
            target_id=target_id,
            amount=amount,
            method=PaymentMethod.VIRTUAL_TERMINAL,
            pms_invoice_ref=pms_invoice_ref,
        )
        _vt_session_event(payment, actor, VT_OPENED)
    try:
        return _open_checkout(
            payment, actor, return_url=public_url(reverse("paylink:complete")), embedded=True
        )
    except CheckoutUnavailable:
        virtual_terminal_close(payment_id=payment.id, actor=actor, reason="cancelled")
        raise


def virtual_terminal_retry(*, payment_id, actor: Actor) -> Payment:
    """A new phone attempt for a failed one, in a new session (call recording muted again).

    The staff page (the portal's virtual terminal) opens DNA's card fields for
    it through `virtual_terminal_session`; one never opened is failed by the
    janitor as an abandoned checkout, like any other.
    """
    with transaction.atomic():
        payment = _retry_by_method(
            payment_id, actor, PaymentMethod.VIRTUAL_TERMINAL, "virtual terminal"
        )
        _vt_session_event(payment, actor, VT_OPENED)
    return payment


def virtual_terminal_session(*, payment: Payment, actor: Actor) -> CheckoutSession:
    """DNA's card page for an open phone payment whose session is open (recording muted).

    A closed session is reopened first (`virtual_terminal_reopen`), never silently.
    """
    payment = _check_reuse(
        payment,
        actor=actor,
        practice=payment.practice,
        method=PaymentMethod.VIRTUAL_TERMINAL,
        amount=payment.amount,
    )
    if actor.kind == "staff":
        access.require_recent_mfa(actor.user, payment.practice)
    if not virtual_terminal_session_open(payment):
        raise InvalidTransition(
            "Card entry for this phone payment is closed: reopen it first.",
            code="session_closed",
        )
    return _open_checkout(
        payment, actor, return_url=public_url(reverse("paylink:complete")), embedded=True
    )


def _require_vt(payment: Payment, actor: Actor) -> None:
    if payment.method != PaymentMethod.VIRTUAL_TERMINAL:
        raise PaymentError("Not a virtual terminal payment.", code="method_not_allowed")
    if actor.kind == "staff":
        access.require(
            actor.user,
            Perm.USE_VIRTUAL_TERMINAL,
            practice_id=payment.practice_id,
            site_id=payment.site_id,
        )


@transaction.atomic
def virtual_terminal_reopen(*, payment_id, actor: Actor) -> bool:
    """Open card entry again for a phone payment still waiting: mute call recording again.

    Returns False when the session is already open. Audited like the first opening
    (`opened`, reason `reopened`).
    """
    payment = lock_payment(payment_id)
    _require_vt(payment, actor)
    if payment.state not in (S.INITIATED, S.AWAITING_CUSTOMER_ACTION):
        raise InvalidTransition(
            f"A {payment.get_state_display().lower()} payment cannot take card details again."
        )
    if actor.kind == "staff":
        access.require_recent_mfa(actor.user, payment.practice)
    if virtual_terminal_session_open(payment):
        return False
    _vt_session_event(payment, actor, VT_OPENED, "reopened")
    return True


@transaction.atomic
def virtual_terminal_close(*, payment_id, actor: Actor, reason: str = "completed") -> bool:
    """End the phone session: unmute call recording and audit it, once per opening.

    Returns False when the session was not open (already closed, or never opened).
    """
    if reason not in VT_CLOSE_REASONS:
        raise PaymentError(
            f"reason is one of {', '.join(VT_CLOSE_REASONS)}.", code="invalid_reason"
        )
    payment = lock_payment(payment_id)
    _require_vt(payment, actor)
    if not virtual_terminal_session_open(payment):
        return False
    _vt_session_event(payment, actor, VT_CLOSED, reason)
    return True


def virtual_terminal_close_abandoned(*, actor: Actor, now=None) -> int:
    """Close sessions open longer than DNA_VIRTUAL_TERMINAL_ABANDON_SECONDS (staff left the
    page without closing it and no outcome came): call recording resumes. Returns how many."""
    now = now or timezone.now()
    opened_before = now - timedelta(seconds=settings.DNA_VIRTUAL_TERMINAL_ABANDON_SECONDS)
    waiting = Payment.objects.filter(
        provider=Provider.DNA,
        method=PaymentMethod.VIRTUAL_TERMINAL,
        state__in=(S.INITIATED, S.AWAITING_CUSTOMER_ACTION),
    ).values_list("pk", flat=True)
    closed = 0
    for payment_id in waiting:
        steps = _vt_steps(payment_id)
        if steps and steps[-1][0] == VT_OPENED and steps[-1][1] <= opened_before:
            closed += virtual_terminal_close(payment_id=payment_id, actor=actor, reason="abandoned")
    return closed


# --- taking a payment and retrying one ---------------------------------------------------


def collection_start(
    *,
    actor: Actor,
    practice: Practice,
    site: Site,
    patient: Patient,
    target_type: str,
    target_id: str,
    amount,
    method: str,
    terminal: Terminal | None = None,
    channel: str = PaymentLink.Channel.APP,
    pms_invoice_ref: str = "",
    due_at: datetime | None = None,
) -> Payment:
    """Take a payment at the desk or from the tablet: the one place that routes it by method.

    terminal: shown on `terminal`; pay_by_link: a link sent by `channel`, due
    by `due_at` if given; cash and voucher: recorded as received. The virtual
    terminal opens its own session (`virtual_terminal_open`); an online
    checkout is the patient's.
    """
    if due_at is not None and method != PaymentMethod.PAY_BY_LINK:
        raise PaymentError(
            "Only a payment link is given a due date.", code="invalid_due_at", field="due_at"
        )
    common = dict(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=target_type,
        target_id=target_id,
        amount=amount,
        pms_invoice_ref=pms_invoice_ref,
    )
    if method == PaymentMethod.TERMINAL:
        return terminal_payment_start(terminal=terminal, **common)
    if terminal is not None:
        raise PaymentError(
            "Only terminal payments use a terminal.", code="invalid_terminal", field="terminal"
        )
    if method == PaymentMethod.PAY_BY_LINK:
        return pay_by_link_issue(channel=channel, due_at=due_at, **common).link.payment
    if method in OFFLINE_METHODS:
        return services.offline_payment_record(method=method, **common)
    raise PaymentError(
        "Choose how the patient is paying: terminal, pay-by-link, cash or voucher.",
        code="invalid_method",
        field="method",
    )


# Methods whose failed payments staff cannot retry, and what to do instead.
_NO_RETRY = {
    PaymentMethod.ONLINE: "An online checkout is the patient's own: they pay again from the app. "
    "To ask them to pay, send a payment link.",
}


def retry_available(payment: Payment, *, retried: bool | None = None) -> bool:
    """Whether a failed payment can be retried (the portal offers the button only then).

    `retried`: whether it already has a retry, when the caller knows (a list annotates
    it for every row); otherwise asked of the database.
    """
    if payment.state != S.FAILED or payment.method in _NO_RETRY or payment.is_procurement:
        return False
    return not (payment.retries.exists() if retried is None else retried)


@dataclass(frozen=True)
class Retry:
    """The new attempt; `new_link` when a fresh payment link was issued and sent for it."""

    payment: Payment
    new_link: bool = False


def payment_retry_start(*, payment_id, actor: Actor) -> Retry:
    """Retry a failed payment by its method's own path, so the new attempt can be paid.

    terminal: sent to the terminal again; pay-by-link: the patient's link moves
    to the new attempt while it is active, else a fresh link is issued and
    sent; virtual terminal: a new phone session; card on file: charged again;
    cash and voucher (split tenders): recorded when received. An online
    checkout is refused (`retry_not_available`). Services check permissions.
    """
    method = Payment.objects.filter(pk=payment_id).values_list("method", flat=True).first()
    if method is None:
        raise NotFound("No such payment.")
    if method in _NO_RETRY:
        raise PaymentError(_NO_RETRY[method], code="retry_not_available")
    if method == PaymentMethod.TERMINAL:
        return Retry(terminal_payment_retry(payment_id=payment_id, actor=actor))
    if method == PaymentMethod.PAY_BY_LINK:
        retried = pay_by_link_retry(payment_id=payment_id, actor=actor)
        return Retry(retried.payment, new_link=retried.new_link)
    if method == PaymentMethod.VIRTUAL_TERMINAL:
        return Retry(virtual_terminal_retry(payment_id=payment_id, actor=actor))
    return Retry(services.payment_retry(payment_id=payment_id, actor=actor))
