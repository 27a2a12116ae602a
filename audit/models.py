"""The audit table: one append-only row per audited event, chained per practice.

PostgreSQL itself refuses UPDATE, DELETE and TRUNCATE on `audit_auditevent`:
plain triggers (migration 0007), not django-pgtrigger's, whose
`SET pgtrigger.ignore` any session could use to skip them. Only the table's
owner (ALTER TABLE ... DISABLE TRIGGER) or a superuser
(session_replication_role) can get past them, and the application runs as a
role that is neither and holds no UPDATE, DELETE or TRUNCATE on the table
(`manage.py db_grant_runtime_role`, docs/security.md). Each row carries `seq`,
its place in its practice's chain, and `hash` = SHA-256(prev_hash + canonical
content), so a change made behind the database's back (trigger disabled,
restored dump edited) is found by `manage.py verify_audit`.
"""

from __future__ import annotations

import uuid

from django.db import models


class EventType(models.TextChoices):
    PAYMENT_INITIATED = "payment.initiated"
    PAYMENT_STATE_CHANGED = "payment.state_changed"
    PAYMENT_REFUNDED = "payment.refunded"
    PAYMENT_PARTIALLY_REFUNDED = "payment.partially_refunded"
    PAYMENT_VOIDED = "payment.voided"
    REWARDS_CREDIT_APPLIED = "rewards_credit.applied"
    PMS_WRITEBACK_FAILED = "pms_writeback.failed"
    APPROVAL_REQUIRED = "approval.required"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_DENIED = "approval.denied"
    APPROVAL_EXPIRED = "approval.expired"
    SUBSCRIPTION_PAYMENT_STATUS_CHANGED = "subscription.payment.status_changed"
    # Beyond the §8 list: overrides and other attributable actions.
    REFUND_FAILED = "refund.failed"
    SPLIT_SETTLED = "split.settled"
    SPLIT_CANCELLED = "split.cancelled"
    SPLIT_TENDER_ADDED = "split.tender_added"
    PAYMENT_INVOICE_REF_SET = "payment.invoice_ref_set"
    DEPOSIT_STATUS_CHANGED = "deposit.status_changed"
    OVERRIDE_APPLIED = "override.applied"
    PAYMENT_EXCEPTION_FLAGGED = "payment.exception_flagged"
    PAYMENT_LINK_ISSUED = "payment_link.issued"
    PAYMENT_LINK_RESENT = "payment_link.resent"
    PAYMENT_LINK_CANCELLED = "payment_link.cancelled"
    RECEIPT_RESENT = "receipt.resent"
    OUTBOX_REDELIVERED = "outbox.redelivered"
    AUDIT_EXPORTED = "audit.exported"
    VIRTUAL_TERMINAL_SESSION = "virtual_terminal.session"
    WEBHOOK_EVENT_REPROCESSED = "webhook_event.reprocessed"
    # System-initiated triggers from other modules (§4.6) and overdue balances.
    PAYMENT_DUE_DATE_SET = "payment.due_date_set"
    DEPOSIT_REFUND_REQUESTED = "deposit.refund_requested"
    PROPOSAL_ACCEPTED = "proposal.accepted"
    BILLING_EVENT_RECORDED = "billing_event.recorded"
    BALANCE_OVERDUE_REMINDED = "balance.overdue_reminded"
    BALANCE_OVERDUE_ESCALATED = "balance.overdue_escalated"
    # Privacy and security (docs/security.md): no personal data in their payloads.
    PATIENT_DATA_EXPORTED = "patient.data_exported"
    PATIENT_ERASED = "patient.erased"
    STAFF_MFA_ENROLLED = "staff.mfa_enrolled"


class AuditEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    seq = models.BigIntegerField()
    event_type = models.CharField(max_length=64, choices=EventType.choices)
    occurred_at = models.DateTimeField()
    actor_kind = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64)
    actor_label = models.CharField(max_length=200)
    site_id = models.UUIDField(null=True, blank=True)
    terminal_id = models.UUIDField(null=True, blank=True)
    payment_id = models.UUIDField(null=True, blank=True)
    subject_type = models.CharField(max_length=32, blank=True)
    subject_id = models.CharField(max_length=64, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    method = models.CharField(max_length=32, blank=True)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    provider_reference = models.CharField(max_length=128, blank=True)
    from_state = models.CharField(max_length=32, blank=True)
    to_state = models.CharField(max_length=32, blank=True)
    reason_code = models.CharField(max_length=32, blank=True)
    approver_id = models.CharField(max_length=64, blank=True)
    approver_label = models.CharField(max_length=200, blank=True)
    mandate_reference = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["practice_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["practice", "seq"], name="audit_seq_unique_in_practice")
        ]
        indexes = [
            models.Index(fields=["practice", "occurred_at"], name="audit_practice_time"),
            models.Index(fields=["payment_id", "seq"], name="audit_payment"),
            models.Index(fields=["practice", "event_type", "occurred_at"], name="audit_type_time"),
        ]

    def __str__(self):
        return f"{self.event_type} #{self.seq} ({self.practice_id})"


class AuditChainHead(models.Model):
    """The tip of one practice's chain; locked while an event is appended."""

    practice = models.OneToOneField(
        "practices.Practice", on_delete=models.PROTECT, primary_key=True, related_name="+"
    )
    seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self):
        return f"chain of {self.practice_id} at #{self.seq}"
