"""Settlement batches from DNA and the items in them, matched to our payments and refunds.

A batch spans practices (one acquiring account), so tenancy lives on the item:
each item resolves to a payment and so to a practice and site. An item that
cannot be matched (unknown transaction, amount or state mismatch) is kept as an
exception row for finance staff; one whose practice cannot be found at all is
seen by platform superusers only.
"""

from __future__ import annotations

from django.db import models

from integrations.models import WebhookEvent


class SettlementBatch(models.Model):
    id = models.BigAutoField(primary_key=True)
    source = models.CharField(max_length=32, default="dna")
    reference = models.CharField(max_length=128, help_text="The provider's batch id.")
    settled_at = models.DateTimeField(null=True, blank=True)
    currency = models.CharField(max_length=3)
    total_sales = models.DecimalField(max_digits=14, decimal_places=2)
    total_refunds = models.DecimalField(max_digits=14, decimal_places=2)
    total_fees = models.DecimalField(max_digits=14, decimal_places=2)
    total_net = models.DecimalField(max_digits=14, decimal_places=2)
    fetched_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-fetched_at"]
        constraints = [
            models.UniqueConstraint(fields=["source", "reference"], name="settlement_batch_once")
        ]

    def __str__(self):
        return f"Batch {self.reference} ({self.currency} {self.total_net} net)"


class SettlementItem(models.Model):
    class Kind(models.TextChoices):
        SALE = "sale", "Sale"
        REFUND = "refund", "Refund"
        CHARGEBACK = "chargeback", "Chargeback"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be matched"
        MATCHED = "matched", "Matched"
        EXCEPTION = "exception", "Exception: needs attention"

    class Problem(models.TextChoices):
        NONE = "", "None"
        UNKNOWN_TRANSACTION = "unknown_transaction", "Unknown transaction"
        AMOUNT_MISMATCH = "amount_mismatch", "Amount mismatch"
        CURRENCY_MISMATCH = "currency_mismatch", "Currency mismatch"
        STATE_MISMATCH = "state_mismatch", "Not captured in Primoro"
        CHARGEBACK = "chargeback", "Chargeback: the cardholder disputed the payment"
        DUPLICATE_IN_BATCH = "duplicate_in_batch", "Listed twice in one batch"
        SETTLED_TWICE = "settled_twice", "Already settled in an earlier batch"

    id = models.BigAutoField(primary_key=True)
    batch = models.ForeignKey(SettlementBatch, on_delete=models.PROTECT, related_name="items")
    practice = models.ForeignKey(
        "practices.Practice", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    site = models.ForeignKey(
        "practices.Site", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    payment = models.ForeignKey(
        "payments.Payment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="settlement_items",
    )
    refund = models.ForeignKey(
        "payments.Refund", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    transaction_id = models.CharField(max_length=128)
    parent_transaction_id = models.CharField(max_length=128, blank=True)
    invoice_id = models.CharField(max_length=128, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    fee = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    problem = models.CharField(max_length=24, choices=Problem.choices, blank=True)
    detail = models.CharField(max_length=255, blank=True)
    matched_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["batch_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "transaction_id"], name="settlement_item_once_per_batch"
            )
        ]
        indexes = [
            models.Index(fields=["status", "practice"], name="settlement_item_status"),
            # A transaction met again in a later batch (settlement._settled_before).
            models.Index(fields=["transaction_id"], name="settlement_item_txn"),
        ]

    def __str__(self):
        return f"{self.kind} {self.amount} {self.currency} [{self.status}]"


class DnaWebhookEvent(WebhookEvent):
    """DNA's stored webhook events, for the admin page of those that need attention."""

    class Meta:
        proxy = True
        verbose_name = "DNA webhook event"
