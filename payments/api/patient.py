"""Patient endpoints (§5.3): outstanding balances, "Pay now", payment status, receipts.

Every lookup is by the signed-in patient: another patient's id is "not found"
(404), never "forbidden", so ids cannot be probed.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from payments import balances
from payments.api import serializers as s
from payments.api.base import PatientListView, PatientView
from payments.api.idempotency import idempotent
from payments.api.schema import IDEMPOTENCY_KEY, errors, uuid_path
from payments.api.throttling import PatientPayThrottle, PatientThrottle, PayIpThrottle
from payments.flows import public_url

TAG = ["patient"]
BALANCE_ID = uuid_path("balance_id", "A balance id from the balances list.")

BALANCE_EXAMPLE = {
    "id": "0b6f8a4e-3f1c-4a55-9d8e-6f0c2a1b9e77",
    "kind": "invoice",
    "description": "Invoice INV-4242",
    "practice": {"id": "5a7d0c2e-8d1b-4f7e-b7a4-3c9e2f1d0a66", "name": "Riverside Dental"},
    "invoice_reference": "INV-4242",
    "amount": "80.00",
    "rewards_credit": None,
    "currency": "GBP",
    "due_at": "2026-03-01T00:00:00Z",
    "overdue": False,
    "requested_at": "2026-02-20T09:30:00Z",
    "link_expires_at": "2026-02-21T09:30:00Z",
    "last_attempt_failed": False,
}


def return_url() -> str:
    """Where DNA sends the patient after the card page: the app, or our neutral page."""
    return settings.PATIENT_APP_RETURN_URL or public_url(reverse("paylink:complete"))


class BalanceListView(PatientView):
    @extend_schema(
        tags=TAG,
        operation_id="patient_balances_list",
        summary="Outstanding balances",
        description="What the practice has asked the patient to pay and is still unpaid "
        "(see docs/api.md for the exact definition), soonest due first.",
        responses={
            200: s.BalanceListSerializer,
            **errors(401, 429),
        },
        examples=[
            OpenApiExample(
                "balances",
                value={"balances": [BALANCE_EXAMPLE], "total": {"GBP": "80.00"}},
                response_only=True,
            )
        ],
    )
    def get(self, request):
        found = balances.balances_for(request.user.patient)
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for balance in found:
            totals[balance.payment.currency] += balance.payment.charge_amount
        return Response(s.BalanceListSerializer({"balances": found, "total": dict(totals)}).data)


class BalanceDetailView(PatientView):
    @extend_schema(
        tags=TAG,
        operation_id="patient_balance_retrieve",
        summary="One outstanding balance",
        parameters=[BALANCE_ID],
        responses={200: s.BalanceSerializer, **errors(401, 404, 429)},
    )
    def get(self, request, balance_id: str):
        balance = balances.balance_get(request.user.patient, balance_id)
        return Response(s.BalanceSerializer(balance).data)


class BalancePayView(PatientView):
    throttle_classes = [PatientThrottle, PatientPayThrottle, PayIpThrottle]

    @extend_schema(
        tags=TAG,
        operation_id="patient_balance_pay",
        summary="Pay now",
        description="Start (or resume) the card payment of a balance on DNA's hosted page. "
        "Send the patient to `redirect_url`, or load `script_url` and open `payment_data`. "
        "The outcome arrives from DNA by webhook: read the payment "
        "(/api/v1/patient/payments/{payment_id}/) or the balances and receipts again.",
        parameters=[BALANCE_ID, IDEMPOTENCY_KEY],
        request=None,
        responses={
            200: s.CheckoutSerializer,
            **errors(400, 401, 404, 409, 410, 415, 422, 429, 503),
        },
    )
    @idempotent
    def post(self, request, balance_id: str):
        checkout = balances.balance_checkout_start(
            actor=request.user.actor, balance_id=balance_id, return_url=return_url()
        )
        return Response(s.CheckoutSerializer(checkout).data)


class PatientPaymentView(PatientView):
    @extend_schema(
        tags=TAG,
        operation_id="patient_payment_retrieve",
        summary="One of the patient's payments",
        description="Follow a checkout: `status` becomes paid (or failed) when DNA's webhook "
        "has been processed.",
        parameters=[uuid_path("payment_id", "The payment_id a checkout returned.")],
        responses={200: s.PatientPaymentSerializer, **errors(401, 404, 429)},
    )
    def get(self, request, payment_id: str):
        payment = balances.patient_payment_get(request.user.patient, payment_id)
        return Response(s.PatientPaymentSerializer(payment).data)


class ReceiptPages(CursorPagination):
    ordering = ("-captured_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100


class ReceiptListView(PatientListView):
    serializer_class = s.ReceiptSerializer
    pagination_class = ReceiptPages

    def get_queryset(self):
        return balances.receipts_for(self.request.user.patient)

    @extend_schema(
        tags=TAG,
        operation_id="patient_receipts_list",
        summary="Receipt history",
        description="Paid payments, newest first, with the rewards credit applied and any "
        "refunds. Page with `cursor` (from `next`) and `limit` (1-100).",
        responses={200: s.ReceiptSerializer(many=True), **errors(400, 401, 404, 429)},
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class ReceiptDetailView(PatientView):
    @extend_schema(
        tags=TAG,
        operation_id="patient_receipt_retrieve",
        summary="One receipt",
        parameters=[uuid_path("receipt_id", "A receipt id (the paid payment's id).")],
        responses={200: s.ReceiptSerializer, **errors(401, 404, 429)},
    )
    def get(self, request, receipt_id: str):
        payment = balances.receipt_get(request.user.patient, receipt_id)
        return Response(s.ReceiptSerializer(payment).data)
