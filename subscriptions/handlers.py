"""Processing one stored GoCardless event (registered with the shared webhook pipeline).

Runs in the `process_webhook_event` task, inside the pipeline's transaction.
It translates the event, looks up what it needs from GoCardless's read-only
API, and calls `subscriptions.services`; it never changes a record itself.

- `payments.*`: a payment we do not know yet is resolved first: GET
  /payments/{id} (amount, currency, mandate, subscription, metadata) and, if
  the mandate is new to us too, GET /mandates/{id} (the PaymentMandateRef and
  metadata). Patient, practice and module come from the metadata keys in
  docs/contracts.md ("GoCardless"); without them the event is kept as
  `unmatched` and shown in the admin. Once paid out, the payout and its items
  are read for the fees.
- `mandates.*`: the same resolution for an unknown mandate, then its status.
- `payouts.paid`: the payout's items give the fees of every payment of ours in it.

A GoCardless look-up that fails transiently raises `RetryableWebhookError`,
so the pipeline retries the event later; nothing is half-applied.
"""

from __future__ import annotations

import uuid

import structlog
from django.utils import timezone

from integrations.models import WebhookEvent
from integrations.webhooks import HandlerResult, RetryableWebhookError
from practices.models import Patient, Site
from subscriptions import services
from subscriptions.client import (
    GcMandate,
    GcPayment,
    GcPayoutItem,
    GoCardlessClient,
    GoCardlessError,
    GoCardlessNotFound,
    GoCardlessUnavailable,
)
from subscriptions.fees import payment_fees, to_money
from subscriptions.lifecycle import PAYMENT_STATUS_RANK, SubscriptionModule, is_handled
from subscriptions.models import SubscriptionMandate, SubscriptionPayment
from subscriptions.provider_events import GoCardlessEvent, MalformedEvent

log = structlog.get_logger("subscriptions.handlers")

Status = WebhookEvent.Status

# The metadata keys the subscription modules set on the GoCardless mandate (and, for
# subscription_id / primoro_site_id, optionally on the payment). GoCardless allows three
# keys per resource, so the mandate carries the first three.
META_PRACTICE = "primoro_practice_id"
META_PATIENT = "primoro_patient_id"
META_MODULE = "subscription_module"
META_SUBSCRIPTION = "subscription_id"
META_SITE = "primoro_site_id"


class Unresolvable(Exception):
    """GoCardless does not tell us whose subscription this is: keep the event as unmatched."""


def handle_gocardless_event(webhook_event: WebhookEvent) -> HandlerResult:
    try:
        event = GoCardlessEvent.parse(webhook_event.body)
    except MalformedEvent as exc:
        return HandlerResult(status=Status.UNMATCHED, note=f"Malformed event: {exc}")
    if not is_handled(event.resource_type, event.action):
        return HandlerResult(status=Status.IGNORED, note=f"{event.kind} is not handled")
    try:
        with GoCardlessClient.from_settings() as client:
            if event.resource_type == "payments":
                return _payment_event(event, client)
            if event.resource_type == "mandates":
                return _mandate_event(event, client)
            return _payout_event(event, client)
    except GoCardlessUnavailable as exc:
        raise RetryableWebhookError(str(exc)) from exc
    except Unresolvable as exc:
        log.warning("gocardless_event_unmatched", event_id=event.id, kind=event.kind, why=str(exc))
        return HandlerResult(status=Status.UNMATCHED, note=str(exc))


def practice_for_event(webhook_event: WebhookEvent):
    """The practice of a stored event from our own records (GoCardless may be what is down)."""
    if webhook_event.practice_id:
        return webhook_event.practice_id
    body = webhook_event.body if isinstance(webhook_event.body, dict) else {}
    links = body.get("links") if isinstance(body.get("links"), dict) else {}
    payment_id, mandate_id = links.get("payment"), links.get("mandate")
    if isinstance(payment_id, str) and payment_id:
        found = SubscriptionPayment.objects.filter(gocardless_payment_id=payment_id).first()
        if found is not None:
            return found.practice_id
    if isinstance(mandate_id, str) and mandate_id:
        found = SubscriptionMandate.objects.filter(gocardless_mandate_id=mandate_id).first()
        if found is not None:
            return found.practice_id
    return None


# --- payments ----------------------------------------------------------------------------------


def _payment_event(event: GoCardlessEvent, client: GoCardlessClient) -> HandlerResult:
    payment_id = event.link("payment")
    if not payment_id:
        raise Unresolvable(f"{event.kind} has no links.payment.")
    payout_from_api = ""
    if not SubscriptionPayment.objects.filter(gocardless_payment_id=payment_id).exists():
        payout_from_api = _register_payment(payment_id, event, client)
    outcome = services.subscription_payment_apply_event(event=event)
    payment = outcome.record
    notes = [outcome.note] if outcome.note else []
    payout_id = event.link("payout") or payment.payout_id or payout_from_api
    if payment.gocardless_status == "paid_out" and payout_id and not payment.has_fees:
        notes.append(_attach_fees(payout_id, [payment_id], client)[payment_id])
    return HandlerResult(
        status=Status.PROCESSED, practice_id=payment.practice_id, note="; ".join(notes)
    )


def _register_payment(payment_id: str, event: GoCardlessEvent, client: GoCardlessClient) -> str:
    """Resolve an unknown payment through the API and record it. Returns its payout id, if any."""
    fetched_at = timezone.now()
    try:
        gc_payment = client.get_payment(payment_id)
    except GoCardlessNotFound as exc:
        raise Unresolvable(f"GoCardless has no payment {payment_id}.") from exc
    except GoCardlessError as exc:
        raise Unresolvable(f"Payment {payment_id} could not be read: {exc}") from exc
    if gc_payment.status not in PAYMENT_STATUS_RANK:
        raise Unresolvable(f"Payment {payment_id} has an unknown status {gc_payment.status!r}.")
    if gc_payment.amount_minor <= 0 or not gc_payment.currency:
        raise Unresolvable(f"Payment {payment_id} has no amount.")
    mandate = _ensure_mandate(gc_payment.mandate_id, event, client, payment=gc_payment)
    subscription_id = (
        gc_payment.metadata.get(META_SUBSCRIPTION) or gc_payment.subscription_id or ""
    )[:64]
    if not subscription_id:
        raise Unresolvable(
            f"Payment {payment_id} is not a subscription payment "
            f"(no metadata {META_SUBSCRIPTION} and no links.subscription)."
        )
    services.subscription_payment_register(
        identity=services.PaymentIdentity(
            gocardless_payment_id=gc_payment.id,
            gocardless_mandate_id=mandate.gocardless_mandate_id,
            gocardless_status=gc_payment.status,
            amount=to_money(gc_payment.amount_minor),
            currency=gc_payment.currency.upper()[:3],
            subscription_id=subscription_id,
            gocardless_subscription_id=gc_payment.subscription_id[:32],
            charge_date=gc_payment.charge_date,
            payout_id=gc_payment.payout_id[:32],
            site_id=_site(gc_payment.metadata, mandate.practice_id),
        ),
        registered_at=fetched_at,
        event=event,
    )
    return gc_payment.payout_id


def _ensure_mandate(
    mandate_id: str,
    event: GoCardlessEvent,
    client: GoCardlessClient,
    *,
    payment: GcPayment | None = None,
) -> SubscriptionMandate:
    """Our record of this mandate, registering it from the API if it is new to us."""
    if not mandate_id:
        raise Unresolvable("The payment names no mandate.")
    known = SubscriptionMandate.objects.filter(gocardless_mandate_id=mandate_id).first()
    if known is not None:
        return known
    fetched_at = timezone.now()
    try:
        gc_mandate = client.get_mandate(mandate_id)
    except GoCardlessNotFound as exc:
        raise Unresolvable(f"GoCardless has no mandate {mandate_id}.") from exc
    except GoCardlessError as exc:
        raise Unresolvable(f"Mandate {mandate_id} could not be read: {exc}") from exc
    identity = _mandate_identity(gc_mandate, payment)
    mandate, _ = services.subscription_mandate_register(
        identity=identity, registered_at=fetched_at, event=event
    )
    return mandate


def _mandate_identity(gc_mandate: GcMandate, payment: GcPayment | None) -> services.MandateIdentity:
    """Whose mandate this is, from its metadata (payment metadata may fill a gap)."""
    metadata = {**(payment.metadata if payment else {}), **gc_mandate.metadata}
    if not gc_mandate.reference:
        raise Unresolvable(f"Mandate {gc_mandate.id} has no reference (PaymentMandateRef).")
    missing = [k for k in (META_PRACTICE, META_PATIENT, META_MODULE) if not metadata.get(k)]
    if missing:
        raise Unresolvable(
            f"Mandate {gc_mandate.id} lacks the metadata {', '.join(missing)}: "
            "we cannot tell whose subscription it is."
        )
    module = metadata[META_MODULE]
    if module not in SubscriptionModule.values:
        raise Unresolvable(
            f"Mandate {gc_mandate.id} has an unknown subscription_module {module!r}."
        )
    practice_id, patient_id = _uuid(metadata[META_PRACTICE]), _uuid(metadata[META_PATIENT])
    if practice_id is None or patient_id is None:
        raise Unresolvable(f"Mandate {gc_mandate.id} metadata ids are not Primoro ids.")
    if not Patient.objects.filter(pk=patient_id, practice_id=practice_id).exists():
        raise Unresolvable(
            f"Mandate {gc_mandate.id} names a patient that is not a patient of that practice."
        )
    return services.MandateIdentity(
        gocardless_mandate_id=gc_mandate.id,
        mandate_reference=gc_mandate.reference[:64],
        gocardless_status=gc_mandate.status,
        practice_id=practice_id,
        patient_id=patient_id,
        module=module,
        site_id=_site(metadata, practice_id),
    )


def _site(metadata: dict[str, str], practice_id) -> uuid.UUID | None:
    """The optional site, only if it is a site of the practice."""
    site_id = _uuid(metadata.get(META_SITE) or "")
    if site_id and Site.objects.filter(pk=site_id, practice_id=practice_id).exists():
        return site_id
    return None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- fees --------------------------------------------------------------------------------------


def _attach_fees(
    payout_id: str,
    payment_ids: list[str],
    client: GoCardlessClient,
    *,
    items: list[GcPayoutItem] | None = None,
) -> dict[str, str]:
    """Read the payout (and its items, unless given) once; record the fees of each payment.

    A payout GoCardless will not show us is noted, not retried: the status
    change stands, and a later `payouts.paid` brings the fees.
    """
    try:
        payout = client.get_payout(payout_id)
        if items is None:
            items = client.list_payout_items(payout_id)
    except GoCardlessError as exc:
        return dict.fromkeys(payment_ids, f"payout {payout_id} could not be read: {exc}")
    notes = {}
    for payment_id in payment_ids:
        fees = payment_fees(payout, items, payment_id)
        outcome = services.subscription_payment_attach_fees(
            gocardless_payment_id=payment_id, fees=fees
        )
        notes[payment_id] = outcome.note
    return notes


# --- mandates and payouts ------------------------------------------------------------------------


def _mandate_event(event: GoCardlessEvent, client: GoCardlessClient) -> HandlerResult:
    mandate_id = event.link("mandate")
    if not mandate_id:
        raise Unresolvable(f"{event.kind} has no links.mandate.")
    _ensure_mandate(mandate_id, event, client)
    outcome = services.subscription_mandate_apply_event(event=event)
    return HandlerResult(
        status=Status.PROCESSED, practice_id=outcome.record.practice_id, note=outcome.note
    )


def _payout_event(event: GoCardlessEvent, client: GoCardlessClient) -> HandlerResult:
    """`payouts.paid`: fees for every payment of ours in the payout that has none yet."""
    payout_id = event.link("payout")
    if not payout_id:
        raise Unresolvable(f"{event.kind} has no links.payout.")
    try:
        items = client.list_payout_items(payout_id)
    except GoCardlessError as exc:
        raise Unresolvable(f"Payout {payout_id} items could not be read: {exc}") from exc
    paid_out = {i.payment_id for i in items if i.type == "payment_paid_out" and i.payment_id}
    ours = dict(
        SubscriptionPayment.objects.filter(
            gocardless_payment_id__in=paid_out, fees_recorded_at__isnull=True
        ).values_list("gocardless_payment_id", "practice_id")
    )
    if not ours:
        return HandlerResult(
            status=Status.PROCESSED,
            note=f"payout {payout_id}: no payment of ours awaits fees ({len(paid_out)} in payout)",
        )
    notes = _attach_fees(payout_id, sorted(ours), client, items=items)
    practices = set(ours.values())
    return HandlerResult(
        status=Status.PROCESSED,
        practice_id=practices.pop() if len(practices) == 1 else None,
        note=f"payout {payout_id}: " + "; ".join(f"{k}: {v}" for k, v in sorted(notes.items())),
    )
