"""`manage.py patient_token <patient id or PMS id>`: a development patient token (DEBUG only).

Signs with the development key under .local/ (payments/api/tokens.py), the one
the API verifies with when PATIENT_JWT_PUBLIC_KEYS is unset. In production the
platform identity service issues patient tokens; this command refuses to run.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from payments.api.tokens import mint_dev_patient_token
from practices.models import Patient


def find_patient(identifier: str, practice: str | None = None) -> Patient:
    """A patient by our id, or by PMS id (with --practice when two practices share it)."""
    try:
        return Patient.objects.get(pk=uuid.UUID(identifier))
    except (ValueError, Patient.DoesNotExist):
        pass
    found = Patient.objects.filter(pms_patient_id=identifier).select_related("practice")
    if practice:
        practice_id = _uuid(practice)
        found = (
            found.filter(practice_id=practice_id)
            if practice_id
            else found.filter(practice__name=practice)
        )
    matches = list(found[:2])
    if not matches:
        raise CommandError(f"No patient with id or PMS id {identifier!r}.")
    if len(matches) > 1:
        raise CommandError(f"{identifier!r} is a PMS id at several practices: add --practice.")
    return matches[0]


def _uuid(value: str):
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class Command(BaseCommand):
    help = "Print a development bearer token for a patient (DEBUG only)."

    def add_arguments(self, parser):
        parser.add_argument("patient", help="Our patient id, or the patient's PMS id.")
        parser.add_argument("--practice", help="Practice name or id, when the PMS id is shared.")
        parser.add_argument("--hours", type=int, default=24, help="Lifetime (default 24).")

    def handle(self, *args, patient: str, practice: str | None, hours: int, **options):
        if not 1 <= hours <= 24 * 7:
            raise CommandError("--hours is between 1 and 168.")
        found = find_patient(patient, practice)
        try:
            token = mint_dev_patient_token(found, lifetime=timedelta(hours=hours))
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        self.stdout.write(token)
