"""What inbound triggers leave behind: the event itself (once), and proposal acceptances."""

from __future__ import annotations

import uuid

from django.db import models


class Module(models.TextChoices):
    """The platform modules allowed to call us, each with its own signing secret."""

    APPOINTMENT_MANAGER = "appointment_manager", "Appointment Manager"
    REWARDS_MANAGER = "rewards_manager", "Rewards Manager"
    SMART_TREATMENT_PROPOSALS = "smart_treatment_proposals", "Smart Treatment Proposals"
    ACP_FINANCE_CENTRE = "acp_finance_centre", "ACP Finance Centre"
    INVENTORY_MANAGER = "inventory_manager", "Inventory & Compliance Manager"


class InboundEvent(models.Model):
    """One accepted inbound event and the answer we gave, written with its effect.

    Only accepted events are stored: a refused one (bad signature, invalid
    body, a domain refusal) leaves no row and no effect, so the sender may
    correct it and send it again under the same event id.
    """

    id = models.BigAutoField(primary_key=True)
    module = models.CharField(max_length=32, choices=Module.choices)
    event_id = models.CharField(max_length=200)
    event_type = models.CharField(max_length=64)
    practice = models.ForeignKey(
        "practices.Practice", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    body_sha256 = models.CharField(max_length=64, help_text="Digest of the raw signed body.")
    body = models.JSONField(help_text="The verified body (card numbers are refused, never stored).")
    status_code = models.PositiveSmallIntegerField(default=200)
    response = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["module", "event_id"], name="inbound_event_once")
        ]
        indexes = [models.Index(fields=["practice", "-received_at"], name="inbound_practice_time")]

    def __str__(self):
        return f"{self.module}:{self.event_type}:{self.event_id}"


class ProposalOption(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    STAGED = "staged", "Staged payments"
    FINANCE_REFERRAL = "finance_referral", "Finance referral"


class ProposalAcceptance(models.Model):
    """A Smart Treatment Proposal the patient accepted, and what we set up for it (§4.6).

    `schedule` (staged payments) lists the instalments in order, each
    `{"number", "due_at", "amount", "payment_id"}`: every instalment is a
    card-on-file payment on the proposal's payment profile, initiated when it
    falls due. `finance_referral` records the third-party outcome only
    (`{"provider", "outcome", "reference"}`); no payment is made for it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("practices.Patient", on_delete=models.PROTECT, related_name="+")
    proposal_id = models.CharField(max_length=60)
    option = models.CharField(max_length=20, choices=ProposalOption.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="GBP")
    payment_profile_id = models.CharField(max_length=64, blank=True)
    payment = models.ForeignKey(
        "payments.Payment", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    schedule = models.JSONField(default=list, blank=True)
    finance_referral = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["practice", "proposal_id"], name="proposal_accepted_once"
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="proposal_amount_positive"
            ),
        ]

    def __str__(self):
        return f"Proposal {self.proposal_id} accepted ({self.option})"
