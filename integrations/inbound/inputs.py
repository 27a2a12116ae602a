"""Reading inbound bodies: serializer fields, the first error as {code, message, field}, lookups.

Every contract declares a DRF serializer for its body. Money is a decimal
string or an integer (never a float), times carry their offset, and the
practice, site and patient a body names are looked up within that practice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from payments.errors import PaymentError
from payments.services import money
from practices.models import Patient, Practice, Site


class InvalidBody(PaymentError):
    """The body does not satisfy the contract: 400, naming the field."""

    code = "invalid_field"


class MoneyField(serializers.Field):
    """A positive amount with at most two decimals, given as a string such as "12.50"."""

    def to_internal_value(self, data):
        try:
            return money(data, field=self.field_name)
        except PaymentError as exc:
            raise serializers.ValidationError(exc.message, code=exc.code) from None

    def to_representation(self, value):
        return str(value)


class AwareDateTimeField(serializers.Field):
    """An ISO 8601 time with its UTC offset; a time without one is refused, not guessed."""

    def to_internal_value(self, data):
        try:
            value = parse_datetime(data) if isinstance(data, str) else None
        except ValueError:
            value = None
        if value is None:
            raise serializers.ValidationError(
                "Give an ISO 8601 time, e.g. 2026-11-23T10:15:00Z.", code="invalid_datetime"
            )
        if value.tzinfo is None:
            raise serializers.ValidationError(
                "The time needs its UTC offset (Z or +01:00).", code="naive_datetime"
            )
        return value

    def to_representation(self, value):
        return value.isoformat()


def reference(**kwargs) -> serializers.CharField:
    """A reference from another module: a non-empty string of at most 64 characters."""
    return serializers.CharField(max_length=kwargs.pop("max_length", 64), **kwargs)


def _first_error(errors, prefix: str = "") -> tuple[str, ErrorDetail]:
    if isinstance(errors, dict):
        field, detail = next(iter(errors.items()))
        name = f"{prefix}.{field}" if prefix else str(field)
        return _first_error(detail, "" if field == "non_field_errors" and not prefix else name)
    if isinstance(errors, list):
        for item in errors:
            if item:
                return _first_error(item, prefix)
    return prefix, errors


def validated(serializer_class: type[serializers.Serializer], body) -> dict:
    """The validated body, or InvalidBody carrying the first problem found."""
    if not isinstance(body, dict):
        raise InvalidBody("The body must be a JSON object.", code="invalid_body")
    serializer = serializer_class(data=body)
    if serializer.is_valid():
        return serializer.validated_data
    field, detail = _first_error(serializer.errors)
    code = "missing_field" if getattr(detail, "code", "") == "required" else "invalid_field"
    raise InvalidBody(
        f"{field}: {detail}" if field else str(detail), code=code, field=field or None
    )


# --- Looking up what a body names, always within its practice ----------------------


@dataclass(frozen=True)
class Place:
    practice: Practice
    site: Site | None = None
    patient: Patient | None = None


def practice_of(practice_id) -> Practice:
    try:
        return Practice.objects.get(pk=practice_id)
    except (Practice.DoesNotExist, ValueError):
        raise InvalidBody(
            "No such practice.", code="unknown_practice", field="practice_id"
        ) from None


def site_of(practice: Practice, site_id) -> Site:
    try:
        return Site.objects.get(pk=site_id, practice=practice)
    except (Site.DoesNotExist, ValueError):
        raise InvalidBody(
            "No such site at this practice.", code="unknown_site", field="site_id"
        ) from None


def patient_of(practice: Practice, patient_id: str) -> Patient:
    """Our patient id, or the PMS patient id, within the practice."""
    patients = Patient.objects.filter(practice=practice)
    try:
        found = patients.filter(pk=uuid.UUID(str(patient_id))).first()
    except ValueError:
        found = None
    found = found or patients.filter(pms_patient_id=patient_id).first()
    if found is None:
        raise InvalidBody(
            "No such patient at this practice.", code="unknown_patient", field="patient_id"
        )
    return found


def place_of(data: dict, *, site: bool = True, patient: bool = True) -> Place:
    practice = practice_of(data["practice_id"])
    return Place(
        practice=practice,
        site=site_of(practice, data["site_id"]) if site else None,
        patient=patient_of(practice, data["patient_id"]) if patient else None,
    )


@dataclass(frozen=True)
class Answer:
    """What a contract's handler did: the JSON answer, and the practice it concerned."""

    body: dict
    practice_id: object = None
