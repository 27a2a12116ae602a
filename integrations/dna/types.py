"""The typed boundary with DNA Payments: dataclasses into and out of the client.

Everything the rest of the code learns from DNA arrives as one of these, with
money as Decimal and times as aware UTC datetimes; only this package reads or
writes DNA's JSON. Card-adjacent fields (card token, masked PAN, expiry, card
holder name) have no place here at all, so they cannot leak further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class TerminalStatus(StrEnum):
    """axept Connect transaction states, plus UNKNOWN for "the provider has no such uti"."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"


class TransactionStatus(StrEnum):
    AUTH = "AUTH"
    CHARGE = "CHARGE"
    CANCEL = "CANCEL"
    DECLINED = "DECLINED"
    VERIFICATION = "VERIFICATION"
    REFUND = "REFUND"


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    expires_at: datetime
    expires_in: int
    scope: str
    token_type: str = "Bearer"

    def as_auth(self) -> dict[str, Any]:
        """The `auth` member of paymentData: the token answer as DNA's script expects it."""
        return {
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "scope": self.scope,
            "token_type": self.token_type,
        }


@dataclass(frozen=True)
class CheckoutRequest:
    """One hosted checkout. invoice_id is our payment id: no personal data goes to DNA."""

    invoice_id: str
    amount: Decimal
    currency: str
    terminal_id: str
    description: str
    return_url: str
    failure_return_url: str
    callback_url: str
    failure_callback_url: str
    transaction_type: str = "SALE"
    wallets: tuple[str, ...] = ()
    embedded: bool = False  # iframe (virtual terminal) rather than a full-page redirect
    moto: bool = False
    language: str = "en-gb"


@dataclass(frozen=True)
class HostedCheckout:
    """What a browser needs to open DNA's hosted page for one checkout."""

    payment_data: dict[str, Any]
    script_url: str
    redirect_url: str | None
    expires_at: datetime


@dataclass(frozen=True)
class TerminalSaleRequest:
    uti: str
    tid: str
    amount: Decimal
    currency: str
    reference: str
    webhook_url: str
    expires_at: datetime
    transaction_type: str = "SALE"


@dataclass(frozen=True)
class TerminalTransaction:
    """A terminal transaction as the provider reports it (status look-up or webhook)."""

    uti: str
    status: TerminalStatus
    tid: str = ""
    amount: Decimal | None = None
    currency: str = ""
    reference: str = ""
    transaction_id: str | None = None
    message: str = ""
    error_code: str = ""
    auth_code: str = ""
    payment_method: str = ""
    card_scheme: str = ""


@dataclass(frozen=True)
class OperationResult:
    """The answer to a charge, refund or cancel."""

    id: str
    parent_id: str | None
    invoice_id: str
    amount: Decimal
    currency: str
    status: str
    message: str
    refunded_amount: Decimal
    remaining_amount: Decimal


@dataclass(frozen=True)
class Transaction:
    id: str
    parent_id: str | None
    invoice_id: str
    transaction_type: str
    status: str
    amount: Decimal
    charged_amount: Decimal
    refunded_amount: Decimal
    currency: str
    terminal_id: str
    payment_method: str
    created_at: datetime | None
    settlement_batch_id: str | None


@dataclass(frozen=True)
class PaymentLinkRequest:
    amount: Decimal
    currency: str
    terminal_id: str
    expires_at: datetime
    customer_name: str
    invoice_id: str = ""
    description: str = ""
    transaction_type: str = "SALE"
    callback_url: str = ""
    failure_callback_url: str = ""
    merchant_custom_data: str = ""


@dataclass(frozen=True)
class PaymentLinkInfo:
    id: str
    status: str
    amount: Decimal
    currency: str
    invoice_id: str
    terminal_id: str
    description: str
    url: str
    created_at: datetime | None
    expires_at: datetime | None
    paid_at: datetime | None = None
    cancelled_at: datetime | None = None


@dataclass(frozen=True)
class PaymentLinkPage:
    links: list[PaymentLinkInfo] = field(default_factory=list)
    total: int = 0
    page: int = 1
    size: int = 20


@dataclass(frozen=True)
class PaymentCallback:
    """A verified hosted-checkout callback, without its card-adjacent fields."""

    transaction_id: str
    invoice_id: str
    amount: Decimal
    currency: str
    success: bool
    settled: bool
    error_code: str
    message: str
    payment_method: str
    card_scheme: str = ""
    rrn: str = ""

    @property
    def outcome(self) -> str:
        """charged, authorised or declined: with the transaction id, the event's identity."""
        if not self.success:
            return "declined"
        return "charged" if self.settled else "authorised"
