"""Portal forms: validate what a person typed and say clearly what is wrong. No card fields, ever."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib.auth import get_user_model

from payments.models import PaymentMethod, PaymentState, ReasonCode, TargetType
from payments.selectors import EXCEPTION_LABELS, SORTS, PaymentFilters
from practices import access
from practices.models import Site


def _blank(label: str, choices) -> list:
    return [("", label), *choices]


class PaymentFilterForm(forms.Form):
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
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

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date must be on or after the start date.")
        return data

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
