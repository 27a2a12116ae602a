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
        ]

    def __str__(self):
        return f"{self.event_type} → {self.destination} [{self.status}]"
