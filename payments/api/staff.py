"""Tablet endpoints (§5.2): "collect payment" routes to a terminal or a pay-by-link, and status.

The tablet never takes card details: a terminal payment is shown on the
registered terminal, a link is sent to the patient. Permissions are the
portal's, checked by the same service functions (payments.flows), and every
lookup is limited to the staff member's practices and sites: anything else is
"not found".
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from audit.actors import Actor
from payments import flows, selectors
from payments.api import serializers as s
from payments.api.base import StaffView
from payments.api.idempotency import idempotent
from payments.api.schema import IDEMPOTENCY_KEY, errors, uuid_path
from payments.errors import NotFound, PaymentError
from practices import access
from practices.models import Patient, Site
from terminals.models import Terminal

TAG = ["staff"]
PAYMENT_ID = uuid_path("payment_id", "A payment id.")


def _payment_out(payment_id, user) -> dict:
    payment = selectors.payment_get_for(user, payment_id, related=("link",))
    return s.StaffPaymentSerializer(payment, context={"now": timezone.now()}).data


def _patient(user, patient_id) -> Patient:
    patient = (
        Patient.objects.select_related("practice")
        .filter(pk=patient_id, practice_id__in=access.practice_ids_for(user))
        .first()
    )
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def _site(user, patient: Patient, site_id) -> Site:
    site = Site.objects.filter(
        pk=site_id, practice_id=patient.practice_id, id__in=access.site_ids_for(user)
    ).first()
    if site is None:
        raise NotFound("No such site.")
    return site


def _terminal(site: Site, terminal_id) -> Terminal:
    terminal = Terminal.objects.filter(pk=terminal_id, site=site, active=True).first()
    if terminal is None:
        raise PaymentError(
            "That terminal is not registered to this site.",
            code="invalid_terminal",
            field="terminal_id",
        )
    return terminal


class CollectionView(StaffView):
    @extend_schema(
        tags=TAG,
        operation_id="staff_collection_create",
        summary="Collect a payment: on a terminal, or by pay-by-link",
        description="`terminal`: the amount is sent to the registered terminal and the "
        "payment waits for the patient there. `pay_by_link`: a one-time link is sent to "
        "the patient through Communication Hub (app first, then email, then SMS); its URL "
        "is never returned here. Read the outcome at /api/v1/staff/payments/{id}/.",
        parameters=[IDEMPOTENCY_KEY],
        request=s.CollectionInputSerializer,
        responses={201: s.StaffPaymentSerializer, **errors(400, 401, 403, 404, 409, 415, 422, 429)},
        examples=[
            OpenApiExample(
                "terminal",
                value={
                    "patient_id": "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                    "site_id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
                    "target_type": "invoice",
                    "target_id": "INV-1001",
                    "amount": "120.00",
                    "method": "terminal",
                    "terminal_id": "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a",
                },
                request_only=True,
            ),
            OpenApiExample(
                "pay-by-link",
                value={
                    "patient_id": "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                    "site_id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
                    "target_type": "invoice",
                    "target_id": "INV-1002",
                    "amount": "45.50",
                    "method": "pay_by_link",
                    "channel": "sms",
                },
                request_only=True,
            ),
        ],
    )
    @idempotent
    def post(self, request):
        data = s.CollectionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        data = data.validated_data
        user = request.user
        patient = _patient(user, data["patient_id"])
        site = _site(user, patient, data["site_id"])
        terminal_id = data.get("terminal_id")
        try:
            payment = flows.collection_start(
                actor=Actor.staff(user),
                practice=patient.practice,
                site=site,
                patient=patient,
                target_type=data["target_type"],
                target_id=data["target_id"],
                amount=data["amount"],
                method=data["method"],
                terminal=_terminal(site, terminal_id) if terminal_id else None,
                channel=data["channel"],
                pms_invoice_ref=data.get("pms_invoice_ref", ""),
                due_at=data.get("due_at"),
            )
        except PaymentError as error:
            if error.field == "terminal":  # the domain's name for what this API calls terminal_id
                error.field = "terminal_id"
            raise
        return Response(_payment_out(payment.id, user), status=201)


class StaffPaymentView(StaffView):
    @extend_schema(
        tags=TAG,
        operation_id="staff_payment_retrieve",
        summary="Payment status",
        parameters=[PAYMENT_ID],
        responses={200: s.StaffPaymentSerializer, **errors(401, 403, 404, 429)},
    )
    def get(self, request, payment_id: str):
        return Response(_payment_out(payment_id, request.user))


class StaffPaymentRetryView(StaffView):
    @extend_schema(
        tags=TAG,
        operation_id="staff_payment_retry",
        summary="Retry a failed terminal payment on its terminal",
        description="A new attempt for the same target, linked to the failed one (once).",
        parameters=[PAYMENT_ID, IDEMPOTENCY_KEY],
        request=None,
        responses={201: s.StaffPaymentSerializer, **errors(400, 401, 403, 404, 409, 415, 422, 429)},
    )
    @idempotent
    def post(self, request, payment_id: str):
        failed = selectors.payment_get_for(request.user, payment_id)
        payment = flows.terminal_payment_retry(
            payment_id=failed.id, actor=Actor.staff(request.user)
        )
        return Response(_payment_out(payment.id, request.user), status=201)


class TerminalQuery(serializers.Serializer):
    site = serializers.UUIDField(required=False)


class TerminalListView(StaffView):
    @extend_schema(
        tags=TAG,
        operation_id="staff_terminals_list",
        summary="Registered terminals the staff member may send payments to",
        parameters=[
            OpenApiParameter(
                "site",
                type=OpenApiTypes.UUID,
                required=False,
                description="Only this site's terminals.",
            )
        ],
        responses={200: s.TerminalListSerializer, **errors(400, 401, 403, 429)},
    )
    def get(self, request):
        query = TerminalQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        terminals = (
            Terminal.objects.filter(
                active=True,
                practice_id__in=access.practice_ids_for(request.user),
                site_id__in=access.site_ids_for(request.user),
            )
            .select_related("site")
            .order_by("site__name", "label")
        )
        if query.validated_data.get("site"):
            terminals = terminals.filter(site_id=query.validated_data["site"])
        return Response(s.TerminalListSerializer({"terminals": terminals}).data)
