"""GoCardless fees of one payment, from its payout's items (PROVIDERS.md "Fees").

A payment carries no fee; the payout it was paid out in does. Its items of
type `gocardless_fee`, `app_fee` and `surcharge_fee` that link to the payment
are the fees (negative strings in minor units; VAT included, and shown in
`taxes`). We keep them as positive amounts: minor units as GoCardless gave
them, and Decimal pounds (every GoCardless currency has two decimals).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from subscriptions.client import GcPayout, GcPayoutItem

FEE_TYPES = ("gocardless_fee", "app_fee", "surcharge_fee")
_CENTS = Decimal("0.01")


def to_money(minor: int) -> Decimal:
    return (Decimal(minor) / 100).quantize(_CENTS)


@dataclass(frozen=True)
class PayoutFees:
    payout_id: str
    currency: str
    gocardless_fee_minor: int = 0
    app_fee_minor: int = 0
    surcharge_fee_minor: int = 0
    tax_minor: int = 0
    paid_out_minor: int = 0  # what the payout paid for the payment (0: not in this payout)

    @property
    def includes_payment(self) -> bool:
        return self.paid_out_minor != 0

    @property
    def total_minor(self) -> int:
        return self.gocardless_fee_minor + self.app_fee_minor + self.surcharge_fee_minor

    def minor_units(self) -> dict[str, int]:
        return {
            "gocardless_fee": self.gocardless_fee_minor,
            "app_fee": self.app_fee_minor,
            "surcharge_fee": self.surcharge_fee_minor,
            "tax": self.tax_minor,
            "total": self.total_minor,
        }


def payment_fees(payout: GcPayout, items: list[GcPayoutItem], payment_id: str) -> PayoutFees:
    """The fees a payout took for one payment (zero where it took none)."""
    totals = dict.fromkeys(FEE_TYPES, 0)
    tax = paid_out = 0
    for item in items:
        if item.type == "payment_paid_out" and item.payment_id == payment_id:
            paid_out += item.amount_minor
        if item.type not in totals or item.payment_id != payment_id:
            continue
        totals[item.type] -= item.amount_minor  # fees are debits: "-84" is a fee of 84
        tax -= item.tax_minor
    return PayoutFees(
        payout_id=payout.id,
        currency=payout.currency,
        gocardless_fee_minor=totals["gocardless_fee"],
        app_fee_minor=totals["app_fee"],
        surcharge_fee_minor=totals["surcharge_fee"],
        tax_minor=tax,
        paid_out_minor=paid_out,
    )
