"""The governed Payment (§3.1, §13.1), its lifecycle (§3.2), tenders, refunds and approvals.

The lifecycle is declared once, as django-fsm transitions on `Payment`; the
state field is protected, so nothing but a transition changes it. Transitions
here only move the state and stamp times: locking, permission checks, audit
events and outbox rows belong to `payments.services`, which is the one write
path for every change.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_fsm import FSMField, FSMModelMixin, transition

from practices.roles import PERMISSION_NAMES


class PaymentState(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    INITIATED = "initiated", "Initiated"
    AWAITING_CUSTOMER_ACTION = "awaiting_customer_action", "Awaiting customer action"
    AUTHORISED = "authorised", "Authorised"
    CAPTURED = "captured", "Captured"
    FAILED = "failed", "Failed"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    REFUNDED = "refunded", "Refunded"
    VOIDED = "voided", "Voided / cancelled"
    RECONCILED = "reconciled", "Reconciled"


S = PaymentState
# "Paid" means captured or later (§3.2): only these may be written to the PMS as paid.
PAID_STATES = frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.RECONCILED})
PRE_CAPTURE_STATES = frozenset({S.PROPOSED, S.INITIATED, S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED})
OPEN_STATES = PRE_CAPTURE_STATES
FINAL_STATES = frozenset({S.FAILED, S.VOIDED, S.REFUNDED, S.RECONCILED})
# A settled (reconciled) payment can still be refunded: practices refund weeks
# later. The refund moves it to a refund state, and the settlement that carries
# the refund reconciles it again.
REFUNDABLE_STATES = frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED, S.RECONCILED})


class PaymentMethod(models.TextChoices):
    TERMINAL = "terminal", "Card terminal"
    ONLINE = "online", "Online / in-app checkout"
    PAY_BY_LINK = "pay_by_link", "Pay-by-link"
    VIRTUAL_TERMINAL = "virtual_terminal", "Virtual terminal (phone)"
    CASH = "cash", "Cash"
    VOUCHER = "voucher", "Voucher"
    CARD_ON_FILE = "card_on_file", "Card on file (system-initiated)"


CARD_METHODS = frozenset(
    {
        PaymentMethod.TERMINAL,
        PaymentMethod.ONLINE,
        PaymentMethod.PAY_BY_LINK,
        PaymentMethod.VIRTUAL_TERMINAL,
        PaymentMethod.CARD_ON_FILE,
    }
)
# Tenders settled in the practice (no provider): captured when staff record them.
OFFLINE_METHODS = frozenset({PaymentMethod.CASH, PaymentMethod.VOUCHER})


class TargetType(models.TextChoices):
    INVOICE = "invoice", "Invoice"
    PATIENT_BALANCE = "patient_balance", "Patient balance"
    DEPOSIT = "deposit", "Deposit"
    PAYMENT_REQUEST = "payment_request", "Payment request"
    COMMERCE_ORDER = "commerce_order", "Commerce order"


# Targets a prospect (not yet a PMS patient) may pay, where the practice permits.
PROSPECT_TARGETS = frozenset(
    {TargetType.DEPOSIT, TargetType.PAYMENT_REQUEST, TargetType.COMMERCE_ORDER}
)


class PaymentPurpose(models.TextChoices):
    """Who pays: a patient (the §3 lifecycle), or the practice paying a supplier (§6.4)."""

    PATIENT = "patient", "Patient payment"
    PROCUREMENT = "procurement", "Practice procurement (supplier invoice)"


class InitiatorKind(models.TextChoices):
    STAFF = "staff", "Staff member"
    PATIENT = "patient", "Patient (self-serve)"
    SYSTEM = "system", "System trigger"


class Provider(models.TextChoices):
    NONE = "", "None (in-practice tender)"
    DNA = "dna", "DNA Payments"
    GOCARDLESS = "gocardless", "GoCardless"


class ReasonCode(models.TextChoices):
    """Refund and void reasons (the peers' list)."""

    PATIENT_REQUEST = "patient_request", "Patient request"
    BILLING_ERROR = "billing_error", "Billing error"
    SERVICE_NOT_RENDERED = "service_not_rendered", "Service not rendered"
    DUPLICATE_CHARGE = "duplicate_charge", "Duplicate charge"
    INSURANCE_ADJUSTMENT = "insurance_adjustment", "Insurance adjustment"
    OTHER = "other", "Other"


class PmsWritebackStatus(models.TextChoices):
    NOT_DUE = "not_due", "Not due"
    PENDING = "pending", "Pending"
    WRITTEN = "written", "Written"
    FALLBACK = "fallback", "Fallback task created"


class PaymentQuerySet(models.QuerySet):
    def paid(self):
        return self.filter(state__in=PAID_STATES)

    def open(self):
        return self.filter(state__in=OPEN_STATES)


class SplitPayment(models.Model):
    """Several tenders against one target: one settled outcome when every tender is captured."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        SETTLED = "settled", "Settled"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("practices.Patient", on_delete=models.PROTECT, related_name="+")
    target_type = models.CharField(max_length=20, choices=TargetType.choices)
    target_id = models.CharField(max_length=64)
    pms_invoice_ref = models.CharField(max_length=64, blank=True)
    amount_due = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="GBP")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_due__gt=0), name="split_amount_positive")
        ]

    def __str__(self):
        return f"Split {self.id} {self.amount_due} [{self.status}]"


class Payment(FSMModelMixin, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey(
        "practices.Practice", on_delete=models.PROTECT, related_name="payments"
    )
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="payments")
    terminal = models.ForeignKey(
        "terminals.Terminal",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="payments",
    )
    patient = models.ForeignKey(
        "practices.Patient",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="payments",
        help_text="Always set for patient payments; empty only for procurement payments.",
    )
    purpose = models.CharField(
        max_length=12, choices=PaymentPurpose.choices, default=PaymentPurpose.PATIENT
    )
    target_type = models.CharField(max_length=20, choices=TargetType.choices)
    target_id = models.CharField(max_length=64)
    pms_invoice_ref = models.CharField(
        max_length=64, blank=True, help_text="May be empty for commerce orders until fulfilment."
    )
    due_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a requested payment is due; unpaid after it, it becomes an overdue balance.",
    )
    split = models.ForeignKey(
        SplitPayment, on_delete=models.PROTECT, null=True, blank=True, related_name="tenders"
    )
    retry_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="retries"
    )
    method = models.CharField(max_length=20, choices=PaymentMethod.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="GBP")
    rewards_credit_applied = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True
    )
    rewards_credit_reference = models.CharField(max_length=64, blank=True)
    captured_amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    refunded_amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    state = FSMField(
        max_length=32, choices=PaymentState.choices, default=PaymentState.PROPOSED, protected=True
    )
    provider = models.CharField(max_length=12, choices=Provider.choices, blank=True)
    provider_reference = models.CharField(max_length=128, blank=True, db_index=True)
    payment_mandate_ref = models.CharField(max_length=64, blank=True)
    payment_profile_id = models.CharField(max_length=64, blank=True)
    moto = models.BooleanField(default=False, help_text="Card not present, taken by phone.")
    initiated_by_kind = models.CharField(max_length=10, choices=InitiatorKind.choices)
    initiated_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    initiated_by_label = models.CharField(max_length=200)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=255, blank=True)
    void_reason_code = models.CharField(max_length=32, choices=ReasonCode.choices, blank=True)
    disputed = models.BooleanField(default=False)
    pms_writeback_status = models.CharField(
        max_length=10, choices=PmsWritebackStatus.choices, default=PmsWritebackStatus.NOT_DUE
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    authorised_at = models.DateTimeField(null=True, blank=True)
    captured_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the DNA janitor next asks about this payment (empty: once it is stale).",
    )

    objects = PaymentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [(perm.value, name) for perm, name in PERMISSION_NAMES.items()]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0)
                & Q(refunded_amount__lte=models.F("captured_amount")),
                name="payment_refunds_within_capture",
            ),
            models.CheckConstraint(
                condition=Q(rewards_credit_applied__isnull=True)
                | (
                    Q(rewards_credit_applied__gt=0)
                    & Q(rewards_credit_applied__lt=models.F("amount"))
                ),
                name="payment_credit_below_amount",
            ),
            # A payment without a patient is only ever the practice paying a
            # matched supplier invoice on an Inventory trigger (§6.4).
            models.CheckConstraint(
                condition=Q(purpose=PaymentPurpose.PATIENT, patient__isnull=False)
                | Q(
                    purpose=PaymentPurpose.PROCUREMENT,
                    patient__isnull=True,
                    target_type=TargetType.INVOICE,
                    initiated_by_kind=InitiatorKind.SYSTEM,
                ),
                name="payment_patient_or_procurement",
            ),
        ]
        indexes = [
            models.Index(fields=["updated_at", "id"], name="payment_updated"),
            models.Index(fields=["practice", "site", "-created_at"], name="payment_site_time"),
            models.Index(fields=["practice", "state", "-created_at"], name="payment_state_time"),
            models.Index(fields=["practice", "target_type", "target_id"], name="payment_target"),
            # The payments list at scale (benchmarks/bench_payments_list.py): sort by amount,
            # the disputed exception, and search by reference (each branch an index look-up).
            models.Index(fields=["amount", "id"], name="payment_amount"),
            models.Index(
                fields=["created_at"], condition=Q(disputed=True), name="payment_disputed"
            ),
            models.Index(fields=["target_id"], name="payment_target_ref"),
            # The janitor's queue: DNA payments whose outcome is not known yet.
            models.Index(
                fields=["next_check_at", "updated_at"],
                condition=Q(
                    provider="dna",
                    state__in=["initiated", "awaiting_customer_action", "authorised"],
                ),
                name="payment_janitor_due",
            ),
            models.Index(
                fields=["pms_invoice_ref"],
                condition=~Q(pms_invoice_ref=""),
                name="payment_invoice_ref",
            ),
        ]

    def __str__(self):
        return f"Payment {self.id} {self.amount} {self.currency} [{self.state}]"

    @property
    def charge_amount(self) -> Decimal:
        """What the primary method is charged: the amount less any rewards credit."""
        return self.amount - (self.rewards_credit_applied or Decimal("0"))

    @property
    def refundable_amount(self) -> Decimal:
        return self.captured_amount - self.refunded_amount

    @property
    def is_paid(self) -> bool:
        return self.state in PAID_STATES

    @property
    def is_procurement(self) -> bool:
        return self.purpose == PaymentPurpose.PROCUREMENT

    # --- The lifecycle (§3.2). Sources listed here are the whole table. ----

    @transition(field=state, source=S.PROPOSED, target=S.INITIATED)
    def initiate(self):
        pass

    @transition(field=state, source=S.INITIATED, target=S.AWAITING_CUSTOMER_ACTION)
    def await_customer(self):
        pass

    @transition(field=state, source=[S.INITIATED, S.AWAITING_CUSTOMER_ACTION], target=S.AUTHORISED)
    def authorise(self, *, at):
        self.authorised_at = at

    @transition(
        field=state,
        source=[S.INITIATED, S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED],
        target=S.CAPTURED,
    )
    def capture(self, *, amount: Decimal, at):
        self.captured_amount = amount
        self.captured_at = at

    @transition(
        field=state,
        source=[S.PROPOSED, S.INITIATED, S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED],
        target=S.FAILED,
    )
    def fail(self, *, code: str, reason: str, at):
        self.failure_code = code
        self.failure_reason = reason[:255]
        self.failed_at = at

    @transition(field=state, source=list(PRE_CAPTURE_STATES), target=S.VOIDED)
    def void(self, *, reason_code: str, at):
        self.void_reason_code = reason_code
        self.voided_at = at

    @transition(field=state, source=list(REFUNDABLE_STATES), target=S.PARTIALLY_REFUNDED)
    def refund_partially(self, *, amount: Decimal):
        self.refunded_amount += amount

    @transition(field=state, source=list(REFUNDABLE_STATES), target=S.REFUNDED)
    def refund_fully(self, *, amount: Decimal):
        self.refunded_amount += amount

    @transition(
        field=state, source=[S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED], target=S.RECONCILED
    )
    def reconcile(self, *, at):
        self.reconciled_at = at


class Refund(models.Model):
    """A refund against one captured payment, always by its original method and transaction."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending at provider"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    # The payment's site. Null only until migration 0008 backfilled the rows written before it.
    site = models.ForeignKey(
        "practices.Site", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    method = models.CharField(max_length=20, choices=PaymentMethod.choices)
    original_provider_reference = models.CharField(max_length=128, blank=True)
    reason_code = models.CharField(max_length=32, choices=ReasonCode.choices)
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    requested_by_label = models.CharField(max_length=200)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    idempotency_key = models.CharField(max_length=128, unique=True)
    provider_reference = models.CharField(max_length=128, blank=True)
    failure_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive")
        ]
        indexes = [models.Index(fields=["practice", "-created_at"], name="refund_practice_time")]

    def __str__(self):
        return f"Refund {self.amount} of {self.payment_id} [{self.status}]"


class ApprovalRequest(models.Model):
    """A refund above the practice threshold waits here for a second person (§4.4, §9)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        GRANTED = "granted", "Granted"
        DENIED = "denied", "Denied"
        EXPIRED = "expired", "Expired"

    class Action(models.TextChoices):
        REFUND = "refund", "Refund"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="+")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="approvals")
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.REFUND)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    reason_code = models.CharField(max_length=32, choices=ReasonCode.choices)
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    expires_at = models.DateTimeField()
    refund = models.OneToOneField(
        Refund, on_delete=models.PROTECT, null=True, blank=True, related_name="approval"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["practice", "status", "created_at"], name="approval_queue")]

    def __str__(self):
        return f"Approval of {self.action} {self.amount} [{self.status}]"


class ProviderOperation(models.Model):
    """Every money-moving provider call, keyed so that a retry can never move money twice."""

    class Status(models.TextChoices):
        PENDING = "pending", "Sent, outcome unknown"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (provider confirmed nothing happened)"

    id = models.BigAutoField(primary_key=True)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="operations")
    operation = models.CharField(max_length=32)
    idempotency_key = models.CharField(max_length=160, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    provider_reference = models.CharField(max_length=128, blank=True)
    last_error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.operation} {self.idempotency_key} [{self.status}]"


def idempotency_key(payment_id, operation: str, discriminator: str = "") -> str:
    """The one rule for provider idempotency keys: payment + operation (+ which one)."""
    key = f"pay:{payment_id}:{operation}"
    return f"{key}:{discriminator}" if discriminator else key


# --- Deposits, overdue balances and supplier payments ------------------------


class DepositStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"
    PAID = "paid", "Paid"
    WAIVED = "waived", "Waived"
    REFUNDED = "refunded", "Refunded"
    CONVERTED = "converted", "Converted (applied to the appointment)"
    FORFEITED = "forfeited", "Forfeited (no-show)"


class Deposit(models.Model):
    """A deposit Appointment Manager asked us to collect for one appointment (product page §6).

    The policy (when a deposit is due, how much, what a no-show costs) is
    Appointment Manager's; we collect it, show its status and handle the
    exceptions. `payment` is the collection attempt; the status follows it
    (paid on capture, refunded on a full refund) and the attendance report
    (converted or forfeited). Changes go through `payments.deposits`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("practices.Patient", on_delete=models.PROTECT, related_name="+")
    appointment_id = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="GBP")
    status = models.CharField(
        max_length=10, choices=DepositStatus.choices, default=DepositStatus.REQUESTED
    )
    due_at = models.DateTimeField(null=True, blank=True)
    channel = models.CharField(max_length=16, blank=True, help_text="How the patient is asked.")
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="deposits"
    )
    requested_by_label = models.CharField(max_length=200)
    attendance_outcome = models.CharField(max_length=10, blank=True)
    status_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="deposit_amount_positive"),
            models.UniqueConstraint(
                fields=["practice", "appointment_id"], name="deposit_once_per_appointment"
            ),
        ]
        indexes = [
            models.Index(fields=["practice", "status", "-created_at"], name="deposit_status_time")
        ]

    def __str__(self):
        return f"Deposit {self.amount} for appointment {self.appointment_id} [{self.status}]"


class OverdueBalance(models.Model):
    """A requested payment still unpaid after its due date: reminded on the practice's schedule.

    One row per billable target; `payments.overdue` creates it when the due
    date passes, sends a reminder on each day of `Practice.overdue_reminder_days`
    and raises a task when the reminders have run out.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Overdue: reminders running"
        ESCALATED = "escalated", "Reminders exhausted: task raised"
        SETTLED = "settled", "Paid"
        CLOSED = "closed", "No longer payable (voided or failed)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("practices.Patient", on_delete=models.PROTECT, related_name="+")
    target_type = models.CharField(max_length=20, choices=TargetType.choices)
    target_id = models.CharField(max_length=64)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="GBP")
    due_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    reminders_sent = models.PositiveSmallIntegerField(default=0)
    last_reminder_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["practice", "target_type", "target_id"], name="overdue_once_per_target"
            )
        ]
        indexes = [models.Index(fields=["status", "due_at"], name="overdue_status_due")]

    def __str__(self):
        return f"Overdue {self.amount} {self.currency} due {self.due_at:%Y-%m-%d} [{self.status}]"


class SupplierPayment(models.Model):
    """What a procurement payment pays: a supplier invoice matched to a purchase order (§6.4).

    The Payment itself has purpose `procurement` and no patient; this row
    carries the procurement references Inventory & Compliance Manager needs in
    its confirmation. PO matching and invoice verification stay with Inventory.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="+")
    payment = models.OneToOneField(
        Payment, on_delete=models.PROTECT, related_name="supplier_payment"
    )
    purchase_order_id = models.CharField(max_length=64)
    supplier_invoice_id = models.CharField(max_length=64)
    supplier_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["practice", "supplier_invoice_id"], name="supplier_payment_invoice"
            )
        ]

    def __str__(self):
        return f"Supplier invoice {self.supplier_invoice_id} (PO {self.purchase_order_id})"


class PaymentLink(models.Model):
    """Our own one-time pay-by-link: only the SHA-256 of its token is stored (§4.2).

    The patient-facing page is ours (payments/links.py), so we decide single use,
    expiry and content; DNA's hosted page takes the card. The link is marked used
    in the same transaction as its payment's capture (payments.services).
    """

    class Channel(models.TextChoices):
        APP = "app", "App"
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        USED = "used", "Used"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey("practices.Practice", on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="+")
    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="link")
    token_hash = models.CharField(max_length=64, unique=True)
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.APP)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["practice", "status", "expires_at"], name="paylink_status_expiry")
        ]

    def __str__(self):
        return f"Link for {self.payment_id} [{self.status}]"

    def effective_status(self, now) -> str:
        """The status as the patient sees it: an active link past its time is expired."""
        if self.status == self.Status.ACTIVE and self.expires_at <= now:
            return self.Status.EXPIRED
        return self.status
