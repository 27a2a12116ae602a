"""Request and response shapes. Output serializers name every field they show (an allow-list):
no card data exists on our records, and none of the provider's card details are ever added.

Money is a decimal string with two places ("80.00"), in and out; times are UTC ISO 8601.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from payments.models import PaymentLink, PaymentMethod, PaymentState, Refund, TargetType
from terminals.models import TerminalKind

MONEY_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"
_MONEY = re.compile(MONEY_PATTERN)


def money(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=12, decimal_places=2, **kwargs)


@extend_schema_field({"type": "string", "pattern": MONEY_PATTERN, "example": "80.00"})
class MoneyInputField(serializers.Field):
    """An amount sent as a decimal string, e.g. "80.00"; never a JSON number (no floats for money)."""

    default_error_messages = {
        "invalid": 'Send the amount as a decimal string with at most two decimal places, e.g. "80.00".'
    }

    def to_internal_value(self, data):
        if not isinstance(data, str) or not _MONEY.match(data):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return str(value)


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    message = serializers.CharField(help_text="What went wrong, safe to show to a person.")
    field = serializers.CharField(
        required=False, help_text="The request field (or header) at fault, when there is one."
    )


class PracticeSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


# --- patient: balances, checkout, payments, receipts -----------------------------------------


class BalanceSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="The balance id; pay it with POST .../pay/.")
    kind = serializers.ChoiceField(choices=TargetType.choices, help_text="What is being paid.")
    description = serializers.CharField()
    practice = PracticeSerializer(source="payment.practice")
    invoice_reference = serializers.CharField(
        source="payment.pms_invoice_ref", allow_null=True, allow_blank=True
    )
    amount = money(source="payment.charge_amount", help_text="What the patient pays now.")
    rewards_credit = money(
        source="payment.rewards_credit_applied",
        allow_null=True,
        help_text="Rewards credit already taken off the amount, if any.",
    )
    currency = serializers.CharField(source="payment.currency")
    due_at = serializers.DateTimeField(source="payment.due_at", allow_null=True)
    overdue = serializers.BooleanField()
    requested_at = serializers.DateTimeField(source="payment.created_at")
    link_expires_at = serializers.SerializerMethodField(
        help_text="When the pay-by-link behind this balance stops working, if it has one."
    )
    last_attempt_failed = serializers.BooleanField(
        help_text="The last card attempt was declined; paying again starts a new attempt."
    )

    @extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
    def get_link_expires_at(self, balance):
        link = balance.link
        return serializers.DateTimeField().to_representation(link.expires_at) if link else None


class BalanceListSerializer(serializers.Serializer):
    balances = BalanceSerializer(many=True)
    total = serializers.DictField(
        child=money(),
        help_text='Sum of the balances per currency, e.g. {"GBP": "120.00"}.',
    )


class CheckoutSerializer(serializers.Serializer):
    payment_id = serializers.UUIDField(
        help_text="The payment being paid; read it at /api/v1/patient/payments/{id}/."
    )
    redirect_url = serializers.URLField(
        allow_null=True,
        help_text="Open this URL (DNA's hosted card page) when set.",
    )
    script_url = serializers.URLField(
        help_text="Otherwise load DNA's payment script from here and call "
        "window.DNAPayments.openPaymentPage(payment_data)."
    )
    payment_data = serializers.DictField(help_text="DNA's paymentData for this checkout.")
    expires_at = serializers.DateTimeField(allow_null=True)


class PatientPaymentSerializer(serializers.Serializer):
    """One of the patient's payments: enough to follow a checkout to its outcome."""

    id = serializers.UUIDField()
    status = serializers.SerializerMethodField(
        help_text="pending (not paid yet), paid, refunded (in part or in full), failed or cancelled."
    )
    state = serializers.ChoiceField(choices=PaymentState.choices, help_text="The lifecycle state.")
    practice = PracticeSerializer()
    kind = serializers.ChoiceField(source="target_type", choices=TargetType.choices)
    invoice_reference = serializers.CharField(source="pms_invoice_ref", allow_blank=True)
    amount = money(source="charge_amount")
    currency = serializers.CharField()
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(source="captured_at", allow_null=True)
    failure_reason = serializers.CharField(
        allow_blank=True, help_text="Why the last attempt failed, as the provider put it."
    )

    @extend_schema_field(
        {"type": "string", "enum": ["pending", "paid", "refunded", "failed", "cancelled"]}
    )
    def get_status(self, payment):
        return patient_status(payment.state)


def patient_status(state: str) -> str:
    if state in (PaymentState.CAPTURED, PaymentState.RECONCILED):
        return "paid"
    if state in (PaymentState.PARTIALLY_REFUNDED, PaymentState.REFUNDED):
        return "refunded"
    if state == PaymentState.FAILED:
        return "failed"
    if state == PaymentState.VOIDED:
        return "cancelled"
    return "pending"


class ReceiptRefundSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    amount = money()
    status = serializers.ChoiceField(
        choices=[(Refund.Status.PENDING, "Pending"), (Refund.Status.SUCCEEDED, "Succeeded")]
    )
    reason = serializers.CharField(source="get_reason_code_display")
    requested_at = serializers.DateTimeField(source="created_at")
    completed_at = serializers.DateTimeField(allow_null=True)


class RewardsCreditSerializer(serializers.Serializer):
    amount = money(source="rewards_credit_applied")
    reference = serializers.CharField(source="rewards_credit_reference")


class ReceiptSerializer(serializers.Serializer):
    """A paid payment as the patient's receipt: what was due, the credit, the charge, refunds."""

    id = serializers.UUIDField()
    practice = PracticeSerializer()
    kind = serializers.ChoiceField(source="target_type", choices=TargetType.choices)
    invoice_reference = serializers.CharField(source="pms_invoice_ref", allow_blank=True)
    method = serializers.ChoiceField(choices=PaymentMethod.choices)
    amount = money(help_text="The amount due, before any rewards credit.")
    rewards_credit = serializers.SerializerMethodField()
    charged_amount = money(source="captured_amount", help_text="What the card (or cash) paid.")
    refunded_amount = money()
    currency = serializers.CharField()
    paid_at = serializers.DateTimeField(source="captured_at")
    status = serializers.SerializerMethodField()
    refunds = ReceiptRefundSerializer(many=True)

    @extend_schema_field(RewardsCreditSerializer(allow_null=True))
    def get_rewards_credit(self, payment):
        if not payment.rewards_credit_applied:
            return None
        return RewardsCreditSerializer(payment).data

    @extend_schema_field({"type": "string", "enum": ["paid", "refunded"]})
    def get_status(self, payment):
        return patient_status(payment.state)


# --- pay-by-link ----------------------------------------------------------------------------


class LinkSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=PaymentLink.Status.choices,
        help_text="active: can be paid; used: already paid; expired or cancelled: ask for a new link.",
    )
    practice_name = serializers.CharField()
    amount = money()
    currency = serializers.CharField()
    invoice_reference = serializers.CharField(allow_blank=True)
    expires_at = serializers.DateTimeField()
    last_attempt_failed = serializers.BooleanField()
    can_request_new_link = serializers.BooleanField()


class ReissueSerializer(serializers.Serializer):
    requested = serializers.BooleanField(
        help_text="True when the practice has been asked (once per link, however often you ask)."
    )


# --- staff (tablet) ----------------------------------------------------------------------------


class CollectionMethod:
    TERMINAL = "terminal"
    PAY_BY_LINK = "pay_by_link"
    CHOICES = [(TERMINAL, "Card terminal"), (PAY_BY_LINK, "Pay-by-link sent to the patient")]


class CollectionInputSerializer(serializers.Serializer):
    patient_id = serializers.UUIDField()
    site_id = serializers.UUIDField()
    target_type = serializers.ChoiceField(choices=TargetType.choices)
    target_id = serializers.CharField(max_length=64, help_text="e.g. the PMS invoice number.")
    amount = MoneyInputField()
    method = serializers.ChoiceField(choices=CollectionMethod.CHOICES)
    terminal_id = serializers.UUIDField(
        required=False, help_text="Required for method=terminal: a registered terminal at the site."
    )
    channel = serializers.ChoiceField(
        choices=PaymentLink.Channel.choices,
        required=False,
        default=PaymentLink.Channel.APP,
        help_text="For method=pay_by_link: the first delivery channel (app, then email, then SMS).",
    )
    pms_invoice_ref = serializers.CharField(max_length=64, required=False, allow_blank=True)
    due_at = serializers.DateTimeField(
        required=False,
        help_text="For method=pay_by_link, optional: when the payment is due (ISO 8601 with "
        "offset, in the future). Unpaid after it, it becomes an overdue balance and the "
        "patient is reminded on the practice's schedule.",
    )


class StaffLinkSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.SerializerMethodField()
    channel = serializers.ChoiceField(choices=PaymentLink.Channel.choices)
    expires_at = serializers.DateTimeField()

    @extend_schema_field({"type": "string", "enum": PaymentLink.Status.values})
    def get_status(self, link):
        return link.effective_status(self.context["now"])


class StaffPaymentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=PaymentState.choices)
    state_label = serializers.CharField(source="get_state_display")
    method = serializers.ChoiceField(choices=PaymentMethod.choices)
    amount = money()
    charged_amount = money(source="charge_amount")
    currency = serializers.CharField()
    patient_id = serializers.UUIDField()
    site_id = serializers.UUIDField()
    terminal_id = serializers.UUIDField(allow_null=True)
    target_type = serializers.ChoiceField(choices=TargetType.choices)
    target_id = serializers.CharField()
    pms_invoice_ref = serializers.CharField(allow_blank=True)
    due_at = serializers.DateTimeField(allow_null=True)
    initiated_by = serializers.CharField(source="initiated_by_label")
    provider_reference = serializers.CharField(allow_blank=True)
    failure_code = serializers.CharField(allow_blank=True)
    failure_reason = serializers.CharField(allow_blank=True)
    retry_of = serializers.UUIDField(source="retry_of_id", allow_null=True)
    link = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(StaffLinkSerializer(allow_null=True))
    def get_link(self, payment):
        link = getattr(payment, "link", None)
        return StaffLinkSerializer(link, context=self.context).data if link else None


class TerminalSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    label = serializers.CharField()
    kind = serializers.ChoiceField(choices=TerminalKind.choices)
    site_id = serializers.UUIDField()
    site_name = serializers.CharField(source="site.name")


class TerminalListSerializer(serializers.Serializer):
    terminals = TerminalSerializer(many=True)
