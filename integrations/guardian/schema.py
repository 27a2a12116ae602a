"""The Guardian feed in /api/schema/: parameters, the page and the signal (docs/contracts.md, §7)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from integrations.guardian.signals import MAX_PAGE
from payments.api.schema import error


def _text(help_text: str, *, nullable: bool = False) -> serializers.CharField:
    return serializers.CharField(allow_null=nullable, help_text=help_text)


SIGNAL = inline_serializer(
    "GuardianSignal",
    {
        "signal_id": _text("Unique and stable: <source>:<key>."),
        "source": _text("payment.transition, payment.state, subscription.transition, ..."),
        "subject_type": _text("payment, subscription_payment or subscription_mandate."),
        "practice_id": _text("The practice."),
        "site_id": _text("The site (null for practice-level records).", nullable=True),
        "terminal_id": _text("The terminal, for terminal payments.", nullable=True),
        "payment_id": _text("The payment the signal is about; null for a mandate.", nullable=True),
        "state": _text("The §3.2 or §3.3 state (for a transition, the state reached)."),
        "transition": inline_serializer(
            "GuardianTransition",
            {"from": _text("null for a first state", nullable=True), "to": _text("")},
            allow_null=True,
            help_text="For a transition; null for a current state.",
        ),
        "amount": _text("Decimal string.", nullable=True),
        "currency": _text("ISO 4217.", nullable=True),
        "provider_reference": _text("DNA Payments or GoCardless reference.", nullable=True),
        "mandate_reference": _text("GoCardless PaymentMandateRef.", nullable=True),
        "occurred_at": serializers.DateTimeField(help_text="UTC, ISO 8601."),
    },
)

PAGE = inline_serializer(
    "GuardianSignalPage",
    {
        "signals": SIGNAL.__class__(many=True),
        "next_cursor": _text("Ask with it for what follows (keep the last one).", nullable=True),
        "has_more": serializers.BooleanField(),
        "fields": serializers.ListField(child=serializers.CharField()),
    },
)

SIGNALS = {
    "operation_id": "guardian_signals",
    "summary": "Lifecycle signals for the AI Guardian (read-only)",
    "description": "Cursor-paged, ordered by occurred_at; the newest GUARDIAN_SETTLE_SECONDS "
    "are held back. Only GET; the token is accepted nowhere else. docs/contracts.md, §7.",
    "tags": ["guardian"],
    "auth": [{"guardianToken": []}],
    "parameters": [
        OpenApiParameter("cursor", str, description="The next_cursor of the previous page."),
        OpenApiParameter(
            "since", OpenApiTypes.DATETIME, description="Signals at or after this time."
        ),
        OpenApiParameter(
            "practice",
            OpenApiTypes.UUID,
            many=True,
            explode=True,
            description="A practice id, repeatable (403 outside a scoped token).",
        ),
        OpenApiParameter(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
            description=f"Signals per page, 1 to {MAX_PAGE}.",
        ),
    ],
    "responses": {
        200: OpenApiResponse(PAGE, description="One page of signals."),
        400: error("A parameter is malformed (`field` names it), or the cursor is not ours."),
        401: error("No Guardian token, or the wrong one (no token configured: always 401)."),
        403: error("The token is scoped to other practices."),
        405: error("Only GET is allowed."),
    },
}
