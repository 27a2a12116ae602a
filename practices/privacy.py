"""GDPR for patient payment data (§14 Privacy): subject access export and erasure.

`subject_access_export` gathers what we hold about one patient — the patient
reference, payments, refunds, receipts and links sent, deposits, overdue
balances, proposals, subscription payments and mandates, and the audit events
about them — as one JSON-ready document. It is an allow-list of fields: card
data never appears (we hold none; provider tokens such as a payment profile
id are left out too), and staff names are left out (third-party data).

`patient_erase` honours a right-to-erasure request within the retention
obligations: the patient's personal data (name, email, phone) is replaced by a
pseudonym, while the financial records and the audit trail that the law
requires us to keep (RETENTION_FINANCIAL_YEARS, default 6 years in the UK)
stay, linked to the pseudonymised reference. The PMS patient id is kept: it is
the PMS's key, not personal data by itself, and it is what matches our
financial records to the practice's own (which the PMS retains and erases
under its own policy). The audit table is append-only and never touched;
audit and outbox payloads carry ids, never names or contact details, so
nothing personal is left there (tests/security/test_privacy.py checks it).

Both are audited (patient.data_exported, patient.erased) without personal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from audit.services import audit_record
from integrations.inbound.models import ProposalAcceptance
from integrations.models import Destination, OutboxMessage
from payments.models import (
    PRE_CAPTURE_STATES,
    ApprovalRequest,
    Deposit,
    OverdueBalance,
    Payment,
    PaymentLink,
    Refund,
    SplitPayment,
)
from practices import access
from practices.models import Patient
from practices.roles import Perm
from subscriptions.models import SubscriptionMandate, SubscriptionPayment

_REFERENCE = re.compile(r"[A-Za-z0-9._-]{0,64}")
FORMAT = "primoro.subject_access_export"
FORMAT_VERSION = 1

# What each record contributes to an export: an allow-list, so a new column
# (or a card-adjacent token) never leaks into one by default.
PATIENT_FIELDS = (
    "id",
    "kind",
    "pms_patient_id",
    "display_name",
    "email",
    "phone",
    "created_at",
    "erased_at",
)
PAYMENT_FIELDS = (
    "id",
    "created_at",
    "site_id",
    "purpose",
    "target_type",
    "target_id",
    "pms_invoice_ref",
    "due_at",
    "split_id",
    "retry_of_id",
    "method",
    "amount",
    "currency",
    "rewards_credit_applied",
    "rewards_credit_reference",
    "captured_amount",
    "refunded_amount",
    "state",
    "provider",
    "provider_reference",
    "payment_mandate_ref",
    "moto",
    "initiated_by_kind",
    "failure_code",
    "failure_reason",
    "void_reason_code",
    "disputed",
    "authorised_at",
    "captured_at",
    "failed_at",
    "voided_at",
    "reconciled_at",
)
REFUND_FIELDS = (
    "id",
    "payment_id",
    "site_id",
    "created_at",
    "amount",
    "method",
    "original_provider_reference",
    "reason_code",
    "status",
    "provider_reference",
    "failure_reason",
    "completed_at",
)
APPROVAL_FIELDS = (
    "id",
    "payment_id",
    "created_at",
    "amount",
    "reason_code",
    "status",
    "decided_at",
)
LINK_FIELDS = ("id", "payment_id", "channel", "status", "expires_at", "used_at", "created_at")
SPLIT_FIELDS = (
    "id",
    "target_type",
    "target_id",
    "amount_due",
    "currency",
    "status",
    "created_at",
    "settled_at",
)
DEPOSIT_FIELDS = (
    "id",
    "appointment_id",
    "amount",
    "currency",
    "status",
    "due_at",
    "channel",
    "payment_id",
    "attendance_outcome",
    "status_reason",
    "created_at",
    "paid_at",
    "closed_at",
)
OVERDUE_FIELDS = (
    "id",
    "target_type",
    "target_id",
    "payment_id",
    "amount",
    "currency",
    "due_at",
    "status",
    "reminders_sent",
    "last_reminder_at",
    "escalated_at",
    "resolved_at",
)
PROPOSAL_FIELDS = (
    "id",
    "proposal_id",
    "option",
    "amount",
    "currency",
    "payment_id",
    "schedule",
    "finance_referral",
    "created_at",
)
MANDATE_FIELDS = ("id", "module", "mandate_reference", "state", "created_at", "updated_at")
SUBSCRIPTION_PAYMENT_FIELDS = (
    "id",
    "module",
    "subscription_id",
    "mandate_reference",
    "amount",
    "currency",
    "charge_date",
    "state",
    "failure_cause",
    "failure_reason_code",
    "failure_description",
    "created_at",
    "updated_at",
)
MESSAGE_FIELDS = ("id", "payment_id", "event_type", "status", "occurred_at", "delivered_at")
AUDIT_FIELDS = (
    "event_id",
    "occurred_at",
    "event_type",
    "actor_kind",
    "payment_id",
    "subject_type",
    "subject_id",
    "amount",
    "currency",
    "method",
    "target_type",
    "target_id",
    "provider_reference",
    "from_state",
    "to_state",
    "reason_code",
    "mandate_reference",
)


class PrivacyError(Exception):
    """A privacy request that cannot be carried out now; `code` is stable."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


def _rows(queryset, fields) -> list[dict]:
    return [dict(row) for row in queryset.values(*fields)]


def _authorise(actor: Actor, patient: Patient) -> None:
    """Staff need the compliance permission at the patient's practice; system actors are operators."""
    if actor.kind == "staff":
        access.require(actor.user, Perm.VIEW_AUDIT_LOG, practice_id=patient.practice_id)
    elif actor.kind != "system":
        raise PrivacyError("Only staff or an operator may do this.", code="permission_denied")


def _lock_patient(patient_id) -> Patient:
    try:
        return Patient.objects.select_for_update().select_related("practice").get(pk=patient_id)
    except (Patient.DoesNotExist, ValueError):
        raise PrivacyError("No such patient.", code="not_found") from None


def retained_until(patient: Patient) -> datetime | None:
    """When the last of the patient's financial records leaves its retention period."""
    last = Payment.objects.filter(patient=patient).aggregate(last=Max("created_at"))["last"]
    if last is None:
        return None
    years = settings.RETENTION_FINANCIAL_YEARS
    try:
        return last.replace(year=last.year + years)
    except ValueError:  # 29 February
        return last.replace(year=last.year + years, day=28)


@transaction.atomic
def subject_access_export(*, patient_id, actor: Actor) -> dict:
    """Everything we hold about one patient, as a JSON-ready dict; records the export."""
    patient = _lock_patient(patient_id)
    _authorise(actor, patient)
    payments = Payment.objects.filter(patient=patient).order_by("created_at")
    payment_ids = list(payments.values_list("id", flat=True))
    deposits = Deposit.objects.filter(patient=patient).order_by("created_at")
    overdue = OverdueBalance.objects.filter(patient=patient).order_by("created_at")
    splits = SplitPayment.objects.filter(patient=patient).order_by("created_at")
    proposals = ProposalAcceptance.objects.filter(patient=patient).order_by("created_at")
    mandates = SubscriptionMandate.objects.filter(patient=patient).order_by("created_at")
    sub_payments = SubscriptionPayment.objects.filter(patient=patient).order_by("created_at")
    refunds = Refund.objects.filter(payment_id__in=payment_ids).order_by("created_at")
    approvals = ApprovalRequest.objects.filter(payment_id__in=payment_ids).order_by("created_at")
    links = PaymentLink.objects.filter(payment_id__in=payment_ids).order_by("created_at")
    related = {str(patient.id)} | {
        str(pk)
        for queryset in (deposits, overdue, splits, proposals, mandates, sub_payments, refunds)
        for pk in queryset.values_list("id", flat=True)
    }
    related |= {str(pk) for pk in approvals.values_list("id", flat=True)}
    related |= {str(pk) for pk in links.values_list("id", flat=True)}
    audit = AuditEvent.objects.filter(
        Q(practice_id=patient.practice_id),
        Q(payment_id__in=payment_ids) | Q(subject_id__in=related),
    ).order_by("seq")
    messages = OutboxMessage.objects.filter(
        payment_id__in=payment_ids, destination=Destination.COMMUNICATION_HUB
    ).order_by("created_at")
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "generated_at": timezone.now(),
        "practice": {"id": patient.practice_id, "name": patient.practice.name},
        "patient": {field: getattr(patient, field) for field in PATIENT_FIELDS},
        "payments": _rows(payments, PAYMENT_FIELDS),
        "refunds": _rows(refunds, REFUND_FIELDS),
        "refund_approvals": _rows(approvals, APPROVAL_FIELDS),
        "split_payments": _rows(splits, SPLIT_FIELDS),
        "payment_links": _rows(links, LINK_FIELDS),
        "communications": _rows(messages, MESSAGE_FIELDS),
        "deposits": _rows(deposits, DEPOSIT_FIELDS),
        "overdue_balances": _rows(overdue, OVERDUE_FIELDS),
        "treatment_proposals": _rows(proposals, PROPOSAL_FIELDS),
        "subscription_mandates": _rows(mandates, MANDATE_FIELDS),
        "subscription_payments": _rows(sub_payments, SUBSCRIPTION_PAYMENT_FIELDS),
        "audit_events": _rows(audit, AUDIT_FIELDS),
        "retention": {
            "financial_records_years": settings.RETENTION_FINANCIAL_YEARS,
            "audit_events_years": settings.RETENTION_AUDIT_YEARS,
            "financial_records_retained_until": retained_until(patient),
        },
    }
    audit_record(
        event_type=EventType.PATIENT_DATA_EXPORTED,
        practice_id=patient.practice_id,
        actor=actor,
        subject_type="patient",
        subject_id=str(patient.id),
        payload={
            "payments": len(document["payments"]),
            "audit_events": len(document["audit_events"]),
        },
    )
    return document


@dataclass(frozen=True)
class Erasure:
    patient: Patient
    changed: bool
    retained_until: datetime | None


def pseudonym(patient: Patient) -> str:
    """What an erased patient is called from now on: stable, and says nothing about them."""
    return f"Erased patient {patient.id.hex[:8]}"


@transaction.atomic
def patient_erase(*, patient_id, actor: Actor, request_reference: str = "") -> Erasure:
    """Pseudonymise one patient's personal data; keep the records retention requires.

    `request_reference` is the erasure request's ticket id (letters, digits,
    ._-), never free text: it goes into the audit trail, which cannot be erased.
    Refused while one of their payments is still in progress (void it or let it
    finish first), so no provider page or receipt is left without its patient.
    Erasing twice changes nothing the second time.
    """
    if not _REFERENCE.fullmatch(request_reference):
        raise PrivacyError(
            "The request reference is a ticket id: up to 64 letters, digits, '.', '_' or '-'.",
            code="invalid_reference",
        )
    patient = _lock_patient(patient_id)
    _authorise(actor, patient)
    if patient.erased_at is not None:
        return Erasure(patient=patient, changed=False, retained_until=retained_until(patient))
    if Payment.objects.filter(patient=patient, state__in=PRE_CAPTURE_STATES).exists():
        raise PrivacyError(
            "A payment for this patient is still in progress; void it or let it finish first.",
            code="payment_in_progress",
        )
    erased = [name for name in ("display_name", "email", "phone") if getattr(patient, name)]
    patient.display_name = pseudonym(patient)
    patient.email = ""
    patient.phone = ""
    patient.erased_at = timezone.now()
    patient.save(update_fields=["display_name", "email", "phone", "erased_at"])
    until = retained_until(patient)
    audit_record(
        event_type=EventType.PATIENT_ERASED,
        practice_id=patient.practice_id,
        actor=actor,
        subject_type="patient",
        subject_id=str(patient.id),
        payload={
            "fields": erased,
            "pseudonym": patient.display_name,
            "pms_patient_id_kept": bool(patient.pms_patient_id),
            "financial_records_retained_until": until,
            "request_reference": request_reference,
        },
    )
    return Erasure(patient=patient, changed=True, retained_until=until)
