"""Who is calling: a patient (JWT), a staff member (tablet token or portal session), or nobody.

The two kinds never mix: patient endpoints accept only patient tokens and staff
endpoints only staff credentials, so a patient token can reach no staff data
and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions, permissions

from audit.actors import Actor
from payments.api.throttling import PatientAuthFailureThrottle
from payments.api.tokens import InvalidPatientToken, patient_from_token, staff_user_for_token
from practices import access
from practices.models import Patient
from practices.roles import Perm


def _bearer(request) -> str | None:
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        raise exceptions.AuthenticationFailed("Send the token after 'Bearer '.")
    return token


@dataclass(frozen=True, eq=False)
class PatientPrincipal:
    """request.user on patient endpoints: the patient the token names."""

    patient: Patient
    claims: dict

    is_authenticated = True
    is_active = True
    is_staff = False
    pk = None

    @property
    def actor(self) -> Actor:
        return Actor.for_patient(self.patient)


class PatientJWTAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <JWT>` signed by the platform identity service (payments/api/tokens.py)."""

    www_authenticate_realm = "patient"

    def authenticate(self, request):
        token = _bearer(request)
        if token is None:
            return None
        failures = PatientAuthFailureThrottle()
        if failures.blocked(request):
            raise exceptions.Throttled(wait=failures.wait())
        try:
            patient, claims = patient_from_token(token)
        except InvalidPatientToken as error:
            failures.record_failure(request)
            raise exceptions.AuthenticationFailed(str(error)) from None
        return PatientPrincipal(patient=patient, claims=claims), claims

    def authenticate_header(self, request):
        return f'Bearer realm="{self.www_authenticate_realm}"'


class StaffTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pst_...`: a tablet token from `manage.py staff_api_token`."""

    def authenticate(self, request):
        token = _bearer(request)
        if token is None:
            return None
        user = staff_user_for_token(token)
        if user is None:
            raise exceptions.AuthenticationFailed("The staff token is unknown, expired or revoked.")
        return user, None

    def authenticate_header(self, request):
        return 'Bearer realm="staff"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """The staff portal's session, with Django's CSRF check on every unsafe method."""


class IsPatient(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, PatientPrincipal)


class IsStaffMember(permissions.BasePermission):
    """A signed-in staff member who may see payments (the portal's gate)."""

    message = "Your account has no access to payments."

    def has_permission(self, request, view):
        user = request.user
        if not getattr(user, "is_authenticated", False) or isinstance(user, PatientPrincipal):
            return False
        return access.has_perm(user, Perm.VIEW_PAYMENTS)
