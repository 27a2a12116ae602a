"""Patient JWTs and staff tokens: what gets in, what is refused, and that the two never mix."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from io import StringIO

import jwt
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from payments.api import tokens
from payments.api.models import StaffApiToken
from payments.api.tokens import staff_api_token_issue, staff_api_token_revoke
from practices.roles import Role
from tests.api.conftest import AUDIENCE, _pem, claims_for, random_ip, sign
from tests.factories import PatientFactory, PracticeFactory, make_staff

pytestmark = pytest.mark.django_db

BALANCES = "/api/v1/patient/balances/"
TERMINALS = "/api/v1/staff/terminals/"


def _get(url: str, token: str | None, scheme: str = "Bearer"):
    client = APIClient()
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}")
    return client.get(url)


def test_a_token_signed_with_either_configured_key_is_accepted(patient, rsa_key, ec_key):
    rs = _get(BALANCES, sign(claims_for(patient), rsa_key, "RS256"))
    es = _get(BALANCES, sign(claims_for(patient), ec_key, "ES256"))

    assert rs.status_code == 200 and es.status_code == 200
    assert rs.json() == {"balances": [], "total": {}}


def test_patients_may_be_named_by_their_pms_id_and_practice(patient, rsa_key):
    claims = claims_for(
        patient,
        sub="identity-user-77",
        pms_patient_id=patient.pms_patient_id,
        practice_id=str(patient.practice_id),
    )

    assert _get(BALANCES, sign(claims, rsa_key)).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 120}, "The token has expired."),
        ({"exp": None}, "The token has no exp claim."),
        ({"aud": "another-service"}, "The token was not issued for this service."),
        ({"iss": "https://evil.example"}, "The token was not issued for this service."),
        ({"aud": None}, "The token has no aud claim."),
        ({"sub": "5f0e6c1e-0000-4000-8000-000000000000"}, "The token names no patient known here."),
        ({"sub": "not-a-uuid"}, "The token names no patient known here."),
        ({"pms_patient_id": "PMS-X"}, "pms_patient_id comes with practice_id."),
    ],
)
def test_bad_claims_are_refused_with_401(patient, rsa_key, overrides, message):
    response = _get(BALANCES, sign(claims_for(patient, **overrides), rsa_key))

    assert response.status_code == 401
    assert response.json() == {"code": "invalid_token", "message": message}
    assert response["WWW-Authenticate"] == 'Bearer realm="patient"'


def test_a_token_signed_by_an_unknown_key_is_refused(patient, stranger_key):
    response = _get(BALANCES, sign(claims_for(patient), stranger_key))

    assert response.status_code == 401
    assert response.json()["message"] == "The token's signature is not valid."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_unsigned_and_symmetric_tokens_are_refused(patient, rsa_key):
    unsigned = jwt.encode(claims_for(patient), None, algorithm="none")
    # The classic confusion: HMAC "signed" with the public key as the secret.
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims_for(patient)).encode())
    mac = hmac.new(_pem(rsa_key).encode(), f"{head}.{body}".encode(), hashlib.sha256)
    forged = f"{head}.{body}.{_b64(mac.digest())}"

    assert _get(BALANCES, unsigned).status_code == 401
    assert _get(BALANCES, forged).status_code == 401


def test_no_credentials_is_401_with_a_challenge(db):
    response = _get(BALANCES, None)

    assert response.status_code == 401
    assert response.json() == {
        "code": "not_authenticated",
        "message": "Authentication credentials were not provided.",
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="patient"'


def test_without_configured_keys_production_refuses_every_patient_token(settings, patient, rsa_key):
    settings.DEBUG = False
    settings.PATIENT_JWT_PUBLIC_KEYS = ""

    response = _get(BALANCES, sign(claims_for(patient), rsa_key))

    assert response.status_code == 401
    assert response.json()["message"] == "Patient sign-in is not configured here."


def test_a_patient_token_opens_no_staff_endpoint_and_a_staff_token_no_patient_one(
    patient, token_for, reception
):
    staff_token = staff_api_token_issue(user=reception).token

    assert _get(TERMINALS, token_for(patient)).status_code == 401
    assert _get(BALANCES, staff_token).status_code == 401
    assert _get(TERMINALS, staff_token).status_code == 200


def test_staff_tokens_are_stored_hashed_and_stop_working_when_revoked_or_expired(reception):
    issued = staff_api_token_issue(user=reception, label="tablet-1")
    record = StaffApiToken.objects.get()
    assert issued.token.startswith("pst_")
    assert issued.token not in str(StaffApiToken.objects.values().get())
    assert record.token_hash == tokens.hash_staff_token(issued.token)
    assert _get(TERMINALS, issued.token).status_code == 200
    assert StaffApiToken.objects.get().last_used_at is not None

    staff_api_token_revoke(token_id=record.id)
    assert _get(TERMINALS, issued.token).status_code == 401

    other = staff_api_token_issue(user=reception)
    StaffApiToken.objects.filter(pk=other.record.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    answer = _get(TERMINALS, other.token)
    assert answer.status_code == 401
    assert answer.json()["message"] == "The staff token is unknown, expired or revoked."


def test_a_deactivated_staff_member_loses_api_access(reception):
    token = staff_api_token_issue(user=reception).token
    reception.is_active = False
    reception.save(update_fields=["is_active"])

    assert _get(TERMINALS, token).status_code == 401


def test_a_user_without_a_staff_profile_cannot_get_a_token(django_user_model):
    user = django_user_model.objects.create_user("someone", password="x-long-password-1")

    with pytest.raises(ValueError, match="practice profile"):
        staff_api_token_issue(user=user)


# --- development tokens ---------------------------------------------------------------------


@pytest.fixture
def dev_keys(settings, tmp_path, monkeypatch):
    """Development mode with no keys configured: the generated dev keypair is used."""
    settings.DEBUG = True
    settings.PATIENT_JWT_PUBLIC_KEYS = ""
    settings.PATIENT_JWT_ISSUER = "primoro-identity-dev"
    monkeypatch.setattr(tokens, "DEV_KEY_FILE", tmp_path / "patient-jwt-dev-key.pem")
    return tmp_path / "patient-jwt-dev-key.pem"


def test_patient_token_command_prints_a_token_that_the_api_accepts(dev_keys, patient):
    out = StringIO()
    call_command("patient_token", patient.pms_patient_id, stdout=out)
    token = out.getvalue().strip()

    assert dev_keys.exists() and oct(dev_keys.stat().st_mode & 0o777) == "0o600"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == str(patient.pk) and claims["aud"] == AUDIENCE
    assert _get(BALANCES, token).status_code == 200


def test_patient_token_command_finds_patients_by_our_id_and_refuses_unknown_ones(dev_keys):
    patient = PatientFactory(practice=PracticeFactory(), pms_patient_id="SHARED-1")
    PatientFactory(practice=PracticeFactory(), pms_patient_id="SHARED-1")

    out = StringIO()
    call_command("patient_token", str(patient.pk), stdout=out)
    assert _get(BALANCES, out.getvalue().strip()).status_code == 200
    with pytest.raises(CommandError, match="several practices"):
        call_command("patient_token", "SHARED-1", stdout=StringIO())
    call_command("patient_token", "SHARED-1", "--practice", patient.practice.name, stdout=out)
    with pytest.raises(CommandError, match="No patient"):
        call_command("patient_token", "NOBODY", stdout=StringIO())


def test_patient_token_command_refuses_when_keys_are_configured(patient):
    with pytest.raises(CommandError, match="identity service"):
        call_command("patient_token", str(patient.pk), stdout=StringIO())


def test_the_demo_data_prints_a_working_patient_token(dev_keys):
    out = StringIO()
    call_command("load_demo", stdout=out)

    line = next(line for line in out.getvalue().splitlines() if "Bearer " in line)
    token = line.split("Bearer ", 1)[1].strip()
    answer = _get(BALANCES, token)
    assert "Amelia Hart (RIV-1001)" in out.getvalue()
    assert answer.status_code == 200


def test_staff_api_token_command_issues_and_revokes(reception):
    out, err = StringIO(), StringIO()
    call_command(
        "staff_api_token", reception.username, "--label", "tablet-3", stdout=out, stderr=err
    )
    token = out.getvalue().strip()
    record = StaffApiToken.objects.get()

    assert record.label == "tablet-3" and f"Token {record.id}" in err.getvalue()
    assert _get(TERMINALS, token).status_code == 200
    call_command("staff_api_token", "--revoke", str(record.id), stdout=StringIO())
    assert _get(TERMINALS, token).status_code == 401


def test_group_operators_get_tokens_too(practice):
    operator = make_staff(Role.GROUP_OPERATOR, group=practice.group)

    assert _get(TERMINALS, staff_api_token_issue(user=operator).token).status_code == 200


def test_failed_patient_tokens_are_limited_per_address(settings, patient, token_for, stranger_key):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "patient_auth_failure": "3/min"}
    guesser, neighbour = APIClient(REMOTE_ADDR=random_ip()), APIClient(REMOTE_ADDR=random_ip())
    forged = token_for(patient, key=stranger_key)

    guesses = [guesser.get(BALANCES, HTTP_AUTHORIZATION=f"Bearer {forged}") for _ in range(3)]
    blocked = guesser.get(BALANCES, HTTP_AUTHORIZATION=f"Bearer {token_for(patient)}")
    elsewhere = neighbour.get(BALANCES, HTTP_AUTHORIZATION=f"Bearer {token_for(patient)}")

    assert [g.status_code for g in guesses] == [401, 401, 401]
    assert blocked.status_code == 429 and blocked.json()["code"] == "rate_limited"
    assert int(blocked["Retry-After"]) > 0
    assert elsewhere.status_code == 200


def test_good_patient_tokens_do_not_count_as_failures(settings, patient, token_for):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "patient_auth_failure": "2/min"}
    client = APIClient(REMOTE_ADDR=random_ip())
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(patient)}")

    answers = [client.get(BALANCES) for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 200]
