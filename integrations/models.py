"""The transactional outbox: every outbound message is a row written with the change.

A row is written in the same database transaction as the state change that
causes it, so a message exists exactly when its cause does. The relay
delivers pending rows; nothing is lost while Redis, a worker or a sink is down.
"""

from __future__ import annotations

import uuid

from django.db import models


class Destination(models.TextChoices):
    COMMUNICATION_HUB = "communication_hub", "Communication Hub"
    TASK_MANAGER = "task_manager", "Task Manager"
    FINANCIAL_INSIGHTS = "financial_insights", "Financial Insights"
    REWARDS_MANAGER = "rewards_manager", "Rewards Manager"
    CARE_PLAN = "care_plan", "Care Plan Subscriptions"
    HYGIENE = "hygiene", "Hygiene Subscriptions"
    INVENTORY = "inventory", "Inventory & Compliance Manager"
    TELEPHONY = "telephony", "Telephony / AI Receptionist"
    PMS = "pms", "Practice management system (writeback)"


class OutboxMessage(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        DEAD = "dead", "Dead letter"
        DISABLED = "disabled", "Destination disabled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    destination = models.CharField(max_length=32, choices=Destination.choices)
    event_type = models.CharField(max_length=64)
    schema_version = models.PositiveSmallIntegerField(default=1)
    occurred_at = models.DateTimeField()
    payload = models.JSONField()
    payment_id = models.UUIDField(null=True, blank=True, db_index=True)
    dedupe_key = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="Set where one cause must produce at most one message.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="outbox_due",
            ),
            models.Index(fields=["destination", "status"], name="outbox_dest_status"),
            # The portal's communications log: a practice's messages to Communication Hub,
            # newest first (payments.selectors.communications_page).
            models.Index(
                fields=["practice", "-created_at", "-id"],
                condition=models.Q(destination="communication_hub"),
                name="outbox_comms_time",
            ),
        ]

    def __str__(self):
        return f"{self.event_type} → {self.destination} [{self.status}]"


class WebhookEvent(models.Model):
    """Every verified provider event, stored once (unique provider + event id) before any processing.

    The receiver verifies the signature, stores the raw body, answers at once and
    leaves the work to a Celery task on the webhooks queue. A re-delivered event
    hits the unique constraint and changes nothing. An event whose payment we do
    not know is kept as `unmatched` and shown to finance staff, never dropped.
    Processing that keeps failing is retried with backoff (`next_attempt_at`)
    and finally `parked`: shown in the admin, with a Task Manager task, until a
    finance admin reprocesses it (integrations.webhooks).
    """

    class Provider(models.TextChoices):
        DNA = "dna", "DNA Payments (online callback)"
        DNA_TERMINAL = "dna_terminal", "DNA Payments (axept Connect terminal)"
        GOCARDLESS = "gocardless", "GoCardless"

    class Status(models.TextChoices):
        RECEIVED = "received", "Received, not yet processed"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Not handled (no effect)"
        UNMATCHED = "unmatched", "No matching record: needs attention"
        FAILED = "failed", "Processing failed: will retry"
        PARKED = "parked", "Gave up retrying: needs attention"

    id = models.BigAutoField(primary_key=True)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    event_id = models.CharField(max_length=200)
    event_type = models.CharField(max_length=64, blank=True)
    resource_ref = models.CharField(
        max_length=128,
        blank=True,
        db_index=True,
        help_text="The provider's id of what it is about.",
    )
    practice = models.ForeignKey(
        "practices.Practice", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    payment_id = models.UUIDField(null=True, blank=True, db_index=True)
    body = models.JSONField(
        help_text="The verified event, as received (no card numbers: masked fields only)."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a failed event is tried again (empty: at once)."
    )
    last_error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_once")
        ]
        indexes = [
            models.Index(fields=["status", "received_at"], name="webhook_status"),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["received", "failed"]),
                name="webhook_due",
            ),
        ]

    def __str__(self):
        return f"{self.provider}:{self.event_id} [{self.status}]"
