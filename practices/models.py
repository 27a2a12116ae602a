"""Practice groups, practices, sites, staff profiles and patients.

Every tenant-owned row in the project carries its practice (and its site where
it has one). Reads go through `practices.access` / the `visible_to` queryset
methods, which always take the actor, so one practice never reads another's rows.
"""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from primoro_payments.crypto import EncryptedEmailField, EncryptedTextField

MAX_REMINDERS = 10


def parse_reminder_days(value: str) -> list[int]:
    """Parse a reminder schedule such as 3,7,14: days after the due date, each later than the last."""
    parts = (value or "").split(",")
    if not value or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValidationError(
            "Enter whole numbers of days separated by commas (no spaces), e.g. 3,7,14.",
            code="invalid_reminder_days",
        )
    days = [int(part) for part in parts]
    if len(days) > MAX_REMINDERS:
        raise ValidationError(f"At most {MAX_REMINDERS} reminders.", code="invalid_reminder_days")
    if days[0] < 1 or days[-1] > 365 or any(b <= a for a, b in itertools.pairwise(days)):
        raise ValidationError(
            "Each day must be between 1 and 365 and later than the one before.",
            code="invalid_reminder_days",
        )
    return days


def validate_reminder_days(value: str) -> None:
    parse_reminder_days(value)


class PracticeGroup(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class PmsWritebackMode(models.TextChoices):
    PAID_ONLY = "paid_only", "Writes captured payments as paid"
    PENDING_MARKER = "pending_marker", "Also accepts a pending marker"
    UNSUPPORTED = "unsupported", "No writeback: fallback tasks only"


class Practice(models.Model):
    """A dental practice: the tenant. Holds the practice-level settings of §13.3."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    group = models.ForeignKey(PracticeGroup, on_delete=models.PROTECT, related_name="practices")
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="GBP")
    refund_approval_threshold = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        default=Decimal("250.00"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Refunds above this amount need a second person with the approver role. "
        "Empty: no approval needed.",
    )
    approval_request_ttl_hours = models.PositiveIntegerField(default=72)
    payment_link_ttl_hours = models.PositiveIntegerField(default=24)
    virtual_terminal_enabled = models.BooleanField(default=True)
    telephony_enabled = models.BooleanField(
        default=False, help_text="Telephony / AI Receptionist module enabled: mute call recording."
    )
    rewards_enabled = models.BooleanField(default=False)
    wallets_enabled = models.BooleanField(default=True)
    prospect_payments_enabled = models.BooleanField(
        default=True, help_text="Allow deposits and requests from prospects not yet in the PMS."
    )
    mfa_required = models.BooleanField(
        default=False, help_text="Require a recent MFA step for virtual terminal and approvals."
    )
    pms_writeback_mode = models.CharField(
        max_length=20, choices=PmsWritebackMode.choices, default=PmsWritebackMode.PAID_ONLY
    )
    dna_terminal_id = models.CharField(
        max_length=64, blank=True, help_text="DNA Payments online terminal id for this practice."
    )
    overdue_reminder_days = models.CharField(
        max_length=64,
        default="3,7,14",
        validators=[validate_reminder_days],
        help_text="Days after the due date on which an unpaid request is reminded, e.g. 3,7,14. "
        "A task is raised once they have all been sent.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(overdue_reminder_days__regex=r"^[0-9]{1,3}(,[0-9]{1,3}){0,9}$"),
                name="practice_reminder_days_format",
            )
        ]

    def __str__(self):
        return self.name

    def reminder_days(self) -> list[int]:
        return parse_reminder_days(self.overdue_reminder_days)


class Site(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="sites")
    name = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["practice", "name"], name="site_name_unique_in_practice"
            )
        ]

    def __str__(self):
        return self.name


class StaffProfile(models.Model):
    """Links a platform account to the practice (or, for group operators, the group) it works for.

    A practice member sees the sites listed, or every site of the practice when
    `all_sites` is set. A group operator sees every practice of their group.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_profile"
    )
    practice = models.ForeignKey(
        Practice, on_delete=models.PROTECT, null=True, blank=True, related_name="staff"
    )
    practice_group = models.ForeignKey(
        PracticeGroup, on_delete=models.PROTECT, null=True, blank=True, related_name="operators"
    )
    sites = models.ManyToManyField(Site, blank=True, related_name="staff")
    all_sites = models.BooleanField(default=False)
    last_mfa_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(practice__isnull=False, practice_group__isnull=True)
                    | models.Q(practice__isnull=True, practice_group__isnull=False)
                ),
                name="staff_belongs_to_practice_xor_group",
            )
        ]

    def __str__(self):
        return f"{self.user} @ {self.practice or self.practice_group}"


class PatientKind(models.TextChoices):
    PATIENT = "patient", "Patient"
    PROSPECT = "prospect", "Prospect"


class PatientQuerySet(models.QuerySet):
    def for_practice(self, practice):
        return self.filter(practice=practice)


class Patient(models.Model):
    """A reference to a person in the PMS (or a prospect not yet there). Not the PMS record."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="patients")
    kind = models.CharField(max_length=10, choices=PatientKind.choices, default=PatientKind.PATIENT)
    pms_patient_id = models.CharField(max_length=64, blank=True)
    display_name = models.CharField(max_length=200)
    # Contact details are encrypted at rest (primoro_payments.crypto); not searchable.
    email = EncryptedEmailField(blank=True)
    phone = EncryptedTextField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    erased_at = models.DateTimeField(
        null=True, blank=True, help_text="Personal data pseudonymised (GDPR erasure)."
    )

    objects = PatientQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["practice", "pms_patient_id"],
                condition=~models.Q(pms_patient_id=""),
                name="patient_pms_id_unique_in_practice",
            )
        ]

    def __str__(self):
        return self.display_name

    @property
    def is_prospect(self) -> bool:
        return self.kind == PatientKind.PROSPECT


class TotpDevice(models.Model):
    """A staff member's authenticator app (TOTP, RFC 6238): the step-up second factor (§9).

    The shared secret is encrypted at rest. `last_used_step` refuses a code
    used before (replay); failures lock the device for a while. Changes go
    through `practices.mfa`.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="totp_device"
    )
    secret = EncryptedTextField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_used_step = models.BigIntegerField(default=0)
    failed_attempts = models.PositiveSmallIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        state = "confirmed" if self.confirmed_at else "enrolling"
        return f"TOTP for {self.user} ({state})"
