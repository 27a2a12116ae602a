"""Template helpers for the staff portal."""

from decimal import Decimal

from django import template

from payments.models import PaymentState, ReasonCode

register = template.Library()
_SYMBOLS = {"GBP": "£", "EUR": "€"}


@register.filter
def money(amount, currency="GBP"):
    if amount is None or amount == "":
        return "—"
    value = Decimal(str(amount))
    symbol = _SYMBOLS.get(currency or "GBP")
    return f"{symbol}{value:,.2f}" if symbol else f"{currency} {value:,.2f}"


@register.filter
def percent(value):
    return f"{float(value) * 100:.1f}%"


@register.filter
def duration(seconds):
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


@register.filter
def reason_label(code):
    """A refund or void reason code as people read it ('duplicate_charge' -> 'Duplicate charge')."""
    return ReasonCode(code).label if code in ReasonCode.values else code


@register.filter
def state_label(code):
    """A lifecycle state as people read it ('awaiting_customer_action' -> 'Awaiting customer action')."""
    return PaymentState(code).label if code in PaymentState.values else code
