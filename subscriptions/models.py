"""Subscription payment status records, sourced from GoCardless: visibility only (§3.3, §3.4).

Care Plan Subscriptions and Hygiene Subscriptions own their Direct Debit
billing in full (mandates, collection, retries, cancellation) through
GoCardless. We only record what GoCardless tells us, surface it, audit it and
emit signals. Nothing here, and no client method anywhere, can create,
schedule or retry a collection.

The PaymentMandateRef (`mandate_reference`) is GoCardless's mandate
`reference`, copied once when a record is created; PostgreSQL refuses to
change it afterwards (a trigger) and to store it blank (a check constraint).

Every change goes through `subscriptions.services`. For the AI Guardian, each
record keeps a clean `state` (one of the five §3.3 states) with
`mandate_reference`, `amount`, `currency`, `updated_at`, `practice` and
`site` (nullable: Direct Debit is practice-level); `GUARDIAN_FIELDS` lists them.
No card data exists in this app.
"""

from __future__ import annotations

import uuid

import pgtrigger
from django.db import models
from django.db.models import Q

from integrations.models import WebhookEvent
from subscriptions.lifecycle import SubscriptionModule, SubscriptionState

__all__ = [
    "SubscriptionMandate",
    "SubscriptionModule",
    "SubscriptionPayment",
    "SubscriptionState",
    "UnmatchedGoCardlessEvent",
]


def _reference_is_fixed(name: str) -> pgtrigger.Protect:
    return pgtrigger.Protect(
        name=name,
        operation=pgtrigger.Update,
        condition=pgtrigger.AnyChange("mandate_reference"),
    )


class SubscriptionMandate(models.Model):
    """A GoCardless mandate of one patient for one subscription module, as GoCardless reports it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(
        "practices.Site", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    patient = models.ForeignKey(
        "practices.Patient", on_delete=models.PROTECT, related_name="subscription_mandates"
    )
    module = models.CharField(max_length=16, choices=SubscriptionModule.choices)
    gocardless_mandate_id = models.CharField(max_length=32, unique=True)
    mandate_reference = models.CharField(
        max_length=64, help_text="PaymentMandateRef: GoCardless's mandate reference, never ours."
    )
    state = models.CharField(max_length=16, choices=SubscriptionState.choices)
    gocardless_status = models.CharField(max_length=32)
    last_event_id = models.CharField(max_length=64, blank=True)
    last_event_created_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(mandate_reference=""), name="sub_mandate_reference_required"
            )
        ]
        indexes = [
            models.Index(fields=["practice", "patient", "module"], name="sub_mandate_patient")
        ]
        triggers = [_reference_is_fixed("sub_mandate_reference_fixed")]

    def __str__(self):
        return f"{self.mandate_reference} ({self.get_module_display()}, {self.state})"


class SubscriptionPayment(models.Model):
    """One GoCardless payment of a subscription: its surfaced state, mandate reference and fees."""

    GUARDIAN_FIELDS = (
        "id",
        "practice_id",
        "site_id",
        "patient_id",
        "module",
        "state",
        "mandate_reference",
        "amount",
        "currency",
        "gocardless_payment_id",
        "updated_at",
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(
        "practices.Site", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    patient = models.ForeignKey(
        "practices.Patient", on_delete=models.PROTECT, related_name="subscription_payments"
    )
    mandate = models.ForeignKey(
        SubscriptionMandate, on_delete=models.PROTECT, related_name="payments"
    )
    module = models.CharField(max_length=16, choices=SubscriptionModule.choices)
    subscription_id = models.CharField(
        max_length=64,
        help_text="The subscription module's id (payment metadata `subscription_id`), "
        "else GoCardless's subscription id.",
    )
    gocardless_subscription_id = models.CharField(max_length=32, blank=True)
    gocardless_payment_id = models.CharField(max_length=32, unique=True)
    mandate_reference = models.CharField(
        max_length=64, help_text="PaymentMandateRef: GoCardless's mandate reference, never ours."
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    charge_date = models.DateField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=SubscriptionState.choices)
    gocardless_status = models.CharField(max_length=32)
    last_event_id = models.CharField(max_length=64, blank=True)
    last_event_created_at = models.DateTimeField(null=True, blank=True)
    failure_cause = models.CharField(max_length=64, blank=True)
    failure_reason_code = models.CharField(max_length=32, blank=True)
    failure_description = models.CharField(max_length=500, blank=True)
    # Fees, known once GoCardless pays the payment out (PROVIDERS.md "Fees"); VAT included.
    payout_id = models.CharField(max_length=32, blank=True)
    fee_currency = models.CharField(max_length=3, blank=True, help_text="The payout's currency.")
    fee_gocardless = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    fee_app = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    fee_surcharge = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    fee_tax = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="VAT within the fees."
    )
    fee_total = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    fees_minor = models.JSONField(
        null=True, blank=True, help_text="The same fees in minor units, as GoCardless gave them."
    )
    fees_recorded_at = models.DateTimeField(null=True, blank=True)
    pms_writeback_queued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(mandate_reference=""), name="sub_payment_reference_required"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="sub_payment_amount_positive"),
        ]
        indexes = [
            models.Index(fields=["practice", "patient", "module"], name="sub_payment_patient"),
            models.Index(fields=["practice", "state", "updated_at"], name="sub_payment_state"),
        ]
        triggers = [_reference_is_fixed("sub_payment_reference_fixed")]

    def __str__(self):
        return f"{self.gocardless_payment_id} {self.currency} {self.amount} ({self.state})"

    @property
    def has_fees(self) -> bool:
        return self.fees_recorded_at is not None


class UnmatchedGoCardlessEvent(WebhookEvent):
    """GoCardless events we could not tie to a patient's subscription: shown, never dropped."""

    class Meta:
        proxy = True
        verbose_name = "unmatched GoCardless event"
