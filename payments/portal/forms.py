"""Portal forms: validate what a person typed and say clearly what is wrong. No card fields, ever."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal

from django import forms
from django.contrib.auth import get_user_model

from payments import communications
from payments.models import PaymentMethod, PaymentState, ReasonCode, TargetType
from payments.selectors import EXCEPTION_LABELS, SORTS, CommunicationFilters, PaymentFilters
from practices import access
from practices.models import Site


def _blank(label: str, choices) -> list:
    return [("", label), *choices]


class DateRangeForm(forms.Form):
    """A list filter that starts with a date range (whole days, both ends included)."""

    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date must be on or after the start date.")
        return data


class PaymentFilterForm(DateRangeForm):
    site = forms.ChoiceField(required=False, label="Site")
    staff = forms.ChoiceField(required=False, label="Staff member")
    method = forms.ChoiceField(
        required=False, label="Method", choices=_blank("Any method", PaymentMethod.choices)
    )
    state = forms.ChoiceField(
        required=False, label="Status", choices=_blank("Any status", PaymentState.choices)
    )
    target_type = forms.ChoiceField(
        required=False, label="Billable target", choices=_blank("Any target", TargetType.choices)
    )
    exception = forms.ChoiceField(
        required=False,
        label="Exceptions",
        choices=_blank("All payments", list(EXCEPTION_LABELS.items())),
    )
    q = forms.CharField(
        required=False,
        label="Search",
        max_length=100,
        help_text="Payment id, invoice, reference or patient name",
    )
    sort = forms.ChoiceField(
        required=False,
        label="Sort by",
        choices=[
            ("newest", "Newest first"),
            ("oldest", "Oldest first"),
            ("amount_high", "Largest amount"),
            ("amount_low", "Smallest amount"),
        ],
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        sites = Site.objects.filter(id__in=access.site_ids_for(user)).order_by("name")
        self.fields["site"].choices = _blank("All my sites", [(str(s.id), s.name) for s in sites])
        staff = (
            get_user_model()
            .objects.filter(staff_profile__practice_id__in=access.practice_ids_for(user))
            .order_by("first_name", "last_name", "username")
        )
        self.fields["staff"].choices = _blank(
            "Anyone", [(str(u.pk), u.get_full_name() or u.get_username()) for u in staff]
        )

    def filters(self) -> PaymentFilters:
        data = self.cleaned_data if self.is_valid() else {}
        return PaymentFilters(
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            site_id=data.get("site") or None,
            staff_id=int(data["staff"]) if data.get("staff") else None,
            method=data.get("method", ""),
            state=data.get("state", ""),
            target_type=data.get("target_type", ""),
            exception=data.get("exception", ""),
            q=data.get("q", ""),
            sort=data.get("sort") if data.get("sort") in SORTS else "newest",
        )


class RefundForm(forms.Form):
    KIND_CHOICES = [("full", "Full refund of what is left"), ("partial", "Partial refund")]
    kind = forms.ChoiceField(
        choices=KIND_CHOICES, widget=forms.RadioSelect, label="Refund", initial="full"
    )
    amount = forms.DecimalField(
        required=False,
        min_value=Decimal("0.01"),
        max_digits=12,
        decimal_places=2,
        label="Amount to refund (£)",
        help_text="Only for a partial refund.",
    )
    reason_code = forms.ChoiceField(
        choices=_blank("Choose a reason", ReasonCode.choices), label="Reason"
    )
    notes = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, label="Notes"
    )

    def clean(self):
        data = super().clean()
        if data.get("kind") == "partial" and not data.get("amount"):
            self.add_error("amount", "Enter the amount to refund.")
        return data


class VoidForm(forms.Form):
    reason_code = forms.ChoiceField(
        choices=_blank("Choose a reason", ReasonCode.choices), label="Reason"
    )
    notes = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, label="Notes"
    )


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("grant", "Approve"), ("deny", "Deny")])
    note = forms.CharField(required=False, max_length=1000, label="Note")


class RefundLogFilterForm(forms.Form):
    actor = forms.ChoiceField(required=False, label="Staff member")
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    reason_code = forms.ChoiceField(
        required=False, label="Reason", choices=_blank("Any reason", ReasonCode.choices)
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        staff = (
            get_user_model()
            .objects.filter(staff_profile__practice_id__in=access.practice_ids_for(user))
            .order_by("first_name", "last_name", "username")
        )
        self.fields["actor"].choices = _blank(
            "Anyone", [(str(u.pk), u.get_full_name() or u.get_username()) for u in staff]
        )


class CommunicationFilterForm(DateRangeForm):
    type = forms.ChoiceField(
        required=False,
        label="Message",
        choices=_blank("Every message", list(communications.EVENT_LABELS.items())),
    )
    status = forms.ChoiceField(
        required=False,
        label="Delivery",
        choices=_blank("Any delivery", list(communications.STATUS_FILTER_LABELS.items())),
    )

    def filters(self) -> CommunicationFilters:
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        return CommunicationFilters(
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            event_type=data.get("type", ""),
            status=data.get("status", ""),
        )


AMOUNT_CHOICES = [
    ("total", "Invoice total"),
    ("partial", "Part of the total"),
    ("custom", "Another amount"),
]
CHANNEL_CHOICES = [
    ("app", "Patient app (email or SMS if not installed)"),
    ("email", "Email"),
    ("sms", "SMS"),
]


class DrawerForm(forms.Form):
    """Take a payment for one patient and billable target (§5.1). No card number field: by design."""

    site = forms.ChoiceField(label="Site")
    target_type = forms.ChoiceField(choices=TargetType.choices, label="Paying for")
    target_id = forms.CharField(
        max_length=64, label="Reference", help_text="Invoice, order or request reference"
    )
    invoice_total = forms.DecimalField(
        required=False, widget=forms.HiddenInput, max_digits=12, decimal_places=2
    )
    amount_choice = forms.ChoiceField(
        choices=AMOUNT_CHOICES, widget=forms.RadioSelect, label="Amount", initial="total"
    )
    amount = forms.DecimalField(
        required=False,
        min_value=Decimal("0.01"),
        max_digits=12,
        decimal_places=2,
        label="Amount (£)",
    )
    method = forms.ChoiceField(widget=forms.RadioSelect, label="Method")
    terminal = forms.ChoiceField(required=False, label="Terminal")
    channel = forms.ChoiceField(
        required=False, choices=CHANNEL_CHOICES, label="Send the link by", initial="app"
    )
    due_at = forms.DateField(
        required=False,
        label="Due by (optional)",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="For a payment link: unpaid after this day, the patient is reminded on the "
        "practice's schedule and the link stays payable until the last reminder.",
    )

    def __init__(self, *args, user, methods, sites, terminals, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = methods
        self.fields["site"].choices = [(str(s.id), s.name) for s in sites]
        self.fields["terminal"].choices = _blank(
            "Choose a terminal",
            [(str(t.id), f"{t.label} ({t.get_kind_display()}, {t.site.name})") for t in terminals],
        )

    def clean(self):
        data = super().clean()
        choice, total, amount = (
            data.get("amount_choice"),
            data.get("invoice_total"),
            data.get("amount"),
        )
        if choice == "total":
            if not total:
                self.add_error("amount_choice", "There is no invoice total here: enter an amount.")
            data["amount"] = total
        elif not amount:
            self.add_error("amount", "Enter the amount to take.")
        elif choice == "partial" and total and amount >= total:
            self.add_error("amount", f"A part payment must be less than the total of £{total}.")
        if data.get("method") == "terminal" and not data.get("terminal"):
            self.add_error("terminal", "Choose the terminal the patient will use.")
        if data.get("due_at"):
            # Due by the end of that day (UTC, the portal's time zone).
            data["due_at"] = datetime.combine(data["due_at"], time(23, 59, 59), tzinfo=UTC)
        return data


SPLIT_TENDER_METHODS = [("terminal", "Card on terminal"), ("cash", "Cash"), ("voucher", "Voucher")]


class SplitTenderForm(forms.Form):
    """One more tender on an open split, for what no live tender covers (e.g. after a void)."""

    method = forms.ChoiceField(choices=SPLIT_TENDER_METHODS, label="Method")
    amount = forms.DecimalField(
        min_value=Decimal("0.01"), max_digits=12, decimal_places=2, label="Amount (£)"
    )
    terminal = forms.ChoiceField(required=False, label="Terminal (for a card)")

    def __init__(self, *args, terminals, uncovered: Decimal, **kwargs):
        super().__init__(*args, **kwargs)
        self.uncovered = uncovered
        self.terminals = {str(t.id): t for t in terminals}
        self.fields["terminal"].choices = _blank("—", [(str(t.id), t.label) for t in terminals])
        self.fields["amount"].help_text = f"At most £{uncovered}."
        if not self.is_bound:
            self.initial.setdefault("amount", uncovered)

    def clean(self):
        data = super().clean()
        if data.get("method") == "terminal" and not data.get("terminal"):
            self.add_error("terminal", "Choose the terminal for the card tender.")
        amount = data.get("amount")
        if amount is not None and amount > self.uncovered:
            self.add_error("amount", f"At most £{self.uncovered} is not covered by another tender.")
        return data


class SplitForm(forms.Form):
    """Several tenders against one target; they must add up to the amount due."""

    site = forms.ChoiceField(label="Site")
    target_type = forms.ChoiceField(choices=TargetType.choices, label="Paying for")
    target_id = forms.CharField(max_length=64, label="Reference")
    amount_due = forms.DecimalField(
        min_value=Decimal("0.01"), max_digits=12, decimal_places=2, label="Amount due (£)"
    )

    TENDER_ROWS = 4

    def __init__(self, *args, sites, terminals, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].choices = [(str(s.id), s.name) for s in sites]
        terminal_choices = _blank("—", [(str(t.id), t.label) for t in terminals])
        tender_methods = _blank("Not used", SPLIT_TENDER_METHODS)
        for row in range(1, self.TENDER_ROWS + 1):
            self.fields[f"method_{row}"] = forms.ChoiceField(
                required=False, choices=tender_methods, label=f"Tender {row} method"
            )
            self.fields[f"amount_{row}"] = forms.DecimalField(
                required=False,
                min_value=Decimal("0.01"),
                max_digits=12,
                decimal_places=2,
                label=f"Tender {row} amount (£)",
            )
            self.fields[f"terminal_{row}"] = forms.ChoiceField(
                required=False, choices=terminal_choices, label=f"Tender {row} terminal"
            )

    def tender_rows(self):
        """(method, amount, terminal) field triples, for the template."""
        return [
            (self[f"method_{row}"], self[f"amount_{row}"], self[f"terminal_{row}"])
            for row in range(1, self.TENDER_ROWS + 1)
        ]

    def clean(self):
        data = super().clean()
        tenders = []
        for row in range(1, self.TENDER_ROWS + 1):
            method, amount, terminal = (
                data.get(f"method_{row}"),
                data.get(f"amount_{row}"),
                data.get(f"terminal_{row}"),
            )
            if not method:
                continue
            if not amount:
                self.add_error(f"amount_{row}", "Enter this tender's amount.")
            if method == "terminal" and not terminal:
                self.add_error(f"terminal_{row}", "Choose the terminal for the card tender.")
            tenders.append((method, amount, terminal))
        data["tenders"] = tenders
        return data
