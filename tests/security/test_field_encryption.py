"""Patient contact details are encrypted at rest; keys rotate without losing a value."""

from __future__ import annotations

import importlib
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError, ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.db import connection

from practices.models import Patient, TotpDevice
from primoro_payments import crypto
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

EMAIL = "ada.lovelace@example.com"
PHONE = "+44 7700 900123"


def _raw(patient) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT email, phone FROM practices_patient WHERE id = %s", [patient.id])
        return cursor.fetchone()


def _key() -> str:
    return Fernet.generate_key().decode()


def test_the_columns_hold_ciphertext_and_the_model_plaintext(practice):
    patient = PatientFactory(practice=practice, email=EMAIL, phone=PHONE)

    email, phone = _raw(patient)
    for stored, plain in ((email, EMAIL), (phone, PHONE)):
        assert stored.startswith("gAAAAA")  # a Fernet token
        assert plain not in stored and "lovelace" not in stored and "7700" not in stored
    fresh = Patient.objects.get(pk=patient.pk)
    assert (fresh.email, fresh.phone) == (EMAIL, PHONE)
    assert list(Patient.objects.filter(pk=patient.pk).values_list("email", flat=True)) == [EMAIL]


def test_equal_values_give_different_tokens_and_empty_stays_empty(practice):
    first = PatientFactory(practice=practice, email=EMAIL)
    second = PatientFactory(practice=practice, email=EMAIL, phone="")

    assert _raw(first)[0] != _raw(second)[0]
    assert _raw(second)[1] == ""


def test_encrypted_fields_cannot_be_searched(practice):
    PatientFactory(practice=practice, email=EMAIL)

    with pytest.raises(FieldError):
        Patient.objects.filter(email=EMAIL).exists()
    with pytest.raises(FieldError):
        Patient.objects.filter(phone__icontains="7700").exists()
    assert Patient.objects.filter(email__isnull=False).count() == 1


def test_the_plaintext_is_validated_before_encryption(practice):
    patient = PatientFactory.build(practice=practice, email="not-an-email", phone="1" * 33)
    with pytest.raises(ValidationError) as invalid:
        patient.full_clean()
    assert set(invalid.value.message_dict) == {"email", "phone"}


def test_rotation_re_encrypts_under_the_newest_key(settings, practice):
    old, new = _key(), _key()
    settings.FIELD_ENCRYPTION_KEYS = old
    patient = PatientFactory(practice=practice, email=EMAIL, phone=PHONE)
    before = _raw(patient)
    settings.FIELD_ENCRYPTION_KEYS = f"{new},{old}"
    assert Patient.objects.get(pk=patient.pk).email == EMAIL  # the old key still reads

    out = StringIO()
    call_command("rotate_field_encryption", "--batch-size", "1", stdout=out)

    after = _raw(patient)
    assert after != before
    assert [Fernet(new.encode()).decrypt(t.encode()).decode() for t in after] == [EMAIL, PHONE]
    assert "practices.Patient.email: 1 re-encrypted" in out.getvalue()
    assert "practices.Patient.phone: 1 re-encrypted" in out.getvalue()
    again = StringIO()
    call_command("rotate_field_encryption", stdout=again)
    assert "Done: 0 values re-encrypted" in again.getvalue()
    settings.FIELD_ENCRYPTION_KEYS = new  # the old key can now go
    assert Patient.objects.get(pk=patient.pk).phone == PHONE


def test_a_removed_key_is_a_loud_error_not_garbage(settings, practice):
    settings.FIELD_ENCRYPTION_KEYS = _key()
    patient = PatientFactory(practice=practice, email=EMAIL)
    settings.FIELD_ENCRYPTION_KEYS = _key()

    with pytest.raises(crypto.FieldDecryptionError):
        Patient.objects.get(pk=patient.pk)


def test_rotation_covers_every_encrypted_column():
    columns = {(model._meta.label, field.name) for model, field in crypto.encrypted_fields()}
    assert columns == {
        ("practices.Patient", "email"),
        ("practices.Patient", "phone"),
        ("practices.TotpDevice", "secret"),
    }
    assert TotpDevice._meta.get_field("secret").column == "secret"


@pytest.mark.parametrize(
    "value",
    ["", "short", "dev-but-production", "a,b", "A" * 42],
    ids=["empty", "short", "development", "two-bad", "truncated"],
)
def test_production_refuses_keys_that_are_not_fernet_keys(value):
    with pytest.raises(ImproperlyConfigured):
        crypto.parse_keys(value, allow_dev=False)


def test_the_data_migration_encrypts_rows_written_before_it(practice):
    migration = importlib.import_module("practices.migrations.0004_encrypt_patient_contact")
    patient = PatientFactory(practice=practice, email="", phone="")
    with connection.cursor() as cursor:  # as 0003 left them: plaintext
        cursor.execute(
            "UPDATE practices_patient SET email = %s, phone = %s WHERE id = %s",
            [EMAIL, PHONE, patient.id],
        )
    already = PatientFactory(practice=practice, email="kept@example.com")
    token = _raw(already)[0]

    with connection.schema_editor() as editor:
        migration.encrypt_existing(None, editor)
        migration.encrypt_existing(None, editor)  # re-running changes nothing

    assert EMAIL not in _raw(patient)[0] and crypto.decrypt(_raw(patient)[0]) == EMAIL
    assert Patient.objects.get(pk=patient.pk).phone == PHONE
    assert _raw(already)[0] == token

    with connection.schema_editor() as editor:
        migration.decrypt_existing(None, editor)
    assert _raw(patient) == (EMAIL, PHONE)
