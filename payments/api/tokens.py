"""Patient bearer tokens (JWTs from the platform identity service) and staff API tokens.

Patient tokens are signed by the identity service with RS256 or ES256 and
verified here against PATIENT_JWT_PUBLIC_KEYS: PEM public keys, one after the
other, so a new key can be added before the old one is retired. Required
claims: `exp`, `iss` (PATIENT_JWT_ISSUER), `aud` (PATIENT_JWT_AUDIENCE) and
either `sub` = our Patient id, or `practice_id` + `pms_patient_id` claims for an
identity service that knows patients by their PMS id.

In development (DEBUG) with no keys configured, a keypair is generated once under
.local/ and `manage.py patient_token` mints tokens with its private half, so the
demo works without an identity service. Production never mints tokens.

Staff API tokens are random, shown once, and stored as SHA-256 only.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.utils import timezone

from payments.api.models import StaffApiToken
from practices.models import Patient
from primoro_payments.config import DEV_SECRETS_FILE

log = structlog.get_logger("payments.api.tokens")

DEV_KEY_FILE = DEV_SECRETS_FILE.parent / "patient-jwt-dev-key.pem"
PEM_END = "-----END PUBLIC KEY-----"
SUPPORTED_ALGORITHMS = frozenset({"RS256", "ES256"})
STAFF_TOKEN_PREFIX = "pst_"


class InvalidPatientToken(Exception):
    """The token is missing a claim, badly signed, expired, or names nobody we know."""


# --- keys -----------------------------------------------------------------------------


def _load_or_create_dev_key() -> ec.EllipticCurvePrivateKey:
    """The development signing key: made once, kept in .local/ (mode 0600)."""
    DEV_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(DEV_KEY_FILE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not DEV_KEY_FILE.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            DEV_KEY_FILE.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            DEV_KEY_FILE.chmod(0o600)
            log.warning("patient_jwt_dev_key_created", path=str(DEV_KEY_FILE))
        key = serialization.load_pem_private_key(DEV_KEY_FILE.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ImproperlyConfigured(f"{DEV_KEY_FILE} does not hold an EC private key.")
    return key


@lru_cache(maxsize=8)
def _parse_public_keys(pem_text: str) -> tuple:
    keys = []
    for block in pem_text.split(PEM_END):
        if "-----BEGIN" not in block:
            continue
        pem = (block.strip() + "\n" + PEM_END + "\n").encode()
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as error:
            raise ImproperlyConfigured(
                "PATIENT_JWT_PUBLIC_KEYS holds something that is not a PEM public key."
            ) from error
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise ImproperlyConfigured("PATIENT_JWT_PUBLIC_KEYS takes RSA or EC public keys.")
        keys.append(key)
    return tuple(keys)


def using_dev_key() -> bool:
    return settings.DEBUG and not settings.PATIENT_JWT_PUBLIC_KEYS.strip()


def verification_keys() -> tuple:
    """The public keys patient tokens may be signed with (the dev key's in development)."""
    if using_dev_key():
        return (_load_or_create_dev_key().public_key(),)
    return _parse_public_keys(settings.PATIENT_JWT_PUBLIC_KEYS)


# --- patient tokens ----------------------------------------------------------------------


def _algorithms() -> list[str]:
    return [a for a in settings.PATIENT_JWT_ALGORITHMS if a in SUPPORTED_ALGORITHMS]


_KEY_TYPES = {"RS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey}


def _decode(token: str) -> dict:
    issuer = settings.PATIENT_JWT_ISSUER
    keys = verification_keys()
    if not keys or not issuer:
        raise InvalidPatientToken("Patient sign-in is not configured here.")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise InvalidPatientToken("The token is not valid.") from None
    if algorithm not in _algorithms():
        raise InvalidPatientToken("The token is not signed with an accepted algorithm.")
    candidates = [key for key in keys if isinstance(key, _KEY_TYPES[algorithm])]
    for key in candidates:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.PATIENT_JWT_AUDIENCE,
                issuer=issuer,
                leeway=settings.PATIENT_JWT_LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:  # another configured key may have signed it
            continue
        except jwt.PyJWTError as error:
            raise InvalidPatientToken(_reason(error)) from error
    raise InvalidPatientToken("The token's signature is not valid.")


def _reason(error: jwt.PyJWTError) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "The token has expired."
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"The token has no {error.claim} claim."
    if isinstance(error, (jwt.InvalidAudienceError, jwt.InvalidIssuerError)):
        return "The token was not issued for this service."
    return "The token is not valid."


def patient_for_claims(claims: dict) -> Patient:
    """The patient the claims name: `practice_id` + `pms_patient_id`, else `sub` (our id)."""
    pms_id, practice_id = claims.get("pms_patient_id"), claims.get("practice_id")
    try:
        if pms_id or practice_id:
            if not (isinstance(pms_id, str) and pms_id and isinstance(practice_id, str)):
                raise InvalidPatientToken("pms_patient_id comes with practice_id.")
            return Patient.objects.select_related("practice").get(
                practice_id=uuid.UUID(practice_id), pms_patient_id=pms_id
            )
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise InvalidPatientToken("The token has no sub claim.")
        return Patient.objects.select_related("practice").get(pk=uuid.UUID(subject))
    except (Patient.DoesNotExist, ValueError, ValidationError):
        raise InvalidPatientToken("The token names no patient known here.") from None


def patient_from_token(token: str) -> tuple[Patient, dict]:
    claims = _decode(token)
    patient = patient_for_claims(claims)
    if getattr(patient, "erased_at", None) is not None:  # GDPR erasure: nobody to sign in as
        raise InvalidPatientToken("The token names no patient known here.")
    return patient, claims


def mint_dev_patient_token(patient: Patient, *, lifetime: timedelta = timedelta(hours=24)) -> str:
    """A token for `patient`, signed with the development key. DEBUG only."""
    if not using_dev_key():
        raise ImproperlyConfigured(
            "Patient tokens are minted only in development without PATIENT_JWT_PUBLIC_KEYS; "
            "in production the platform identity service issues them."
        )
    now = timezone.now()
    claims = {
        "sub": str(patient.pk),
        "iss": settings.PATIENT_JWT_ISSUER,
        "aud": settings.PATIENT_JWT_AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    return jwt.encode(claims, _load_or_create_dev_key(), algorithm="ES256")


# --- staff API tokens --------------------------------------------------------------------


def hash_staff_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedStaffToken:
    record: StaffApiToken
    token: str  # shown once


@transaction.atomic
def staff_api_token_issue(*, user, label: str = "", days: int | None = None) -> IssuedStaffToken:
    """A new tablet token for a staff member with a practice or group profile."""
    if not user.is_active or getattr(user, "staff_profile", None) is None:
        raise ValueError("Only active staff members with a practice profile get API tokens.")
    days = settings.STAFF_API_TOKEN_DAYS if days is None else days
    if not 1 <= days <= 365:
        raise ValueError("A token lasts between 1 and 365 days.")
    token = STAFF_TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = StaffApiToken.objects.create(
        user=user,
        token_hash=hash_staff_token(token),
        label=label[:100],
        expires_at=timezone.now() + timedelta(days=days),
    )
    log.info("staff_api_token_issued", token_id=record.id, user_id=user.pk, label=record.label)
    return IssuedStaffToken(record=record, token=token)


@transaction.atomic
def staff_api_token_revoke(*, token_id: int) -> StaffApiToken:
    record = StaffApiToken.objects.select_for_update().get(pk=token_id)
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        log.info("staff_api_token_revoked", token_id=record.id, user_id=record.user_id)
    return record


def staff_user_for_token(token: str):
    """The active staff user behind a usable token, or None."""
    if not token.startswith(STAFF_TOKEN_PREFIX) or len(token) > 100:
        return None
    record = (
        StaffApiToken.objects.select_related("user", "user__staff_profile")
        .filter(token_hash=hash_staff_token(token))
        .first()
    )
    now = timezone.now()
    if record is None or not record.usable(now) or not record.user.is_active:
        return None
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=5):
        StaffApiToken.objects.filter(pk=record.pk).update(last_used_at=now)
    return record.user
