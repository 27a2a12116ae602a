"""What the API keeps of its own: Idempotency-Key records and staff API tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class IdempotencyKey(models.Model):
    """One POST made with an Idempotency-Key, and (once it finished) the response it got.

    `principal` is who sent it ("patient:<id>", "staff:<id>", "link:<token hash>"),
    so two callers can never see each other's responses. `request_hash` covers the
    method, path and body: the same key with anything else is refused.
    """

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    id = models.BigAutoField(primary_key=True)
    principal = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    locked_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["principal", "key"], name="idempotency_key_once")
        ]

    def __str__(self):
        return f"{self.principal} {self.key} [{self.status}]"


class StaffApiToken(models.Model):
    """A bearer token for the tablet app, bound to one staff member. Only its SHA-256 is kept."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=100, blank=True, help_text="Which device, e.g. tablet-2.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"API token {self.id} for {self.user_id} ({self.label or 'no label'})"

    def usable(self, now) -> bool:
        return self.revoked_at is None and self.expires_at > now
