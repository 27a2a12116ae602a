"""The base API views: JSON only, our error shape, and who the caller is for Idempotency-Key."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from payments.api.auth import (
    IsPatient,
    IsStaffMember,
    PatientJWTAuthentication,
    StaffSessionAuthentication,
    StaffTokenAuthentication,
)
from payments.api.errors import api_exception_handler, error_response
from payments.api.throttling import LinkThrottle, PatientThrottle, StaffThrottle
from payments.flows import hash_link_token


class ApiView(APIView):
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # A form body would be read (and emptied) by the PAN guard before DRF sees it:
        # say plainly that only JSON is accepted instead of "field required".
        length = request.META.get("CONTENT_LENGTH") or "0"
        media_type = (request.content_type or "").split(";")[0].strip()
        if length not in ("", "0") and media_type != "application/json":
            raise exceptions.UnsupportedMediaType(media_type or "(none)")

    def get_exception_handler(self):
        return api_exception_handler

    def handled_error(self, exc):
        """The error response for a known exception (used by @idempotent), else None."""
        return error_response(exc)


class PatientView(ApiView):
    authentication_classes = [PatientJWTAuthentication]
    permission_classes = [IsPatient]
    throttle_classes = [PatientThrottle]

    def idempotency_principal(self, request, *args, **kwargs) -> str:
        return f"patient:{request.user.patient.pk}"


class PatientListView(PatientView, GenericAPIView):
    pass


class StaffView(ApiView):
    authentication_classes = [StaffTokenAuthentication, StaffSessionAuthentication]
    permission_classes = [IsStaffMember]
    throttle_classes = [StaffThrottle]

    def idempotency_principal(self, request, *args, **kwargs) -> str:
        return f"staff:{request.user.pk}"


class LinkView(ApiView):
    """Public: the link token in the path is the only credential."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [LinkThrottle]

    def idempotency_principal(self, request, *args, token: str = "", **kwargs) -> str:
        return f"link:{hash_link_token(token)}"
