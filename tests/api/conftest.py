"""API fixtures: an identity service's signing keys, patient tokens, staff tokens, clients.

The identity service is played by a keypair made here: its public key is
configured exactly as production configures it (PATIENT_JWT_PUBLIC_KEYS, PEM),
and tokens are signed with its private key by PyJWT, as the real service would.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from rest_framework.test import APIClient

from audit.actors import Actor
from payments import flows, services
from payments.api.tokens import staff_api_token_issue
from payments.models import PaymentMethod, TargetType
from tests.providers.conftest import dna, http, live, sim_terminal  # noqa: F401

ISSUER = "https://identity.primoro.test"
AUDIENCE = "primoro-payments"


def _pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="session")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def stranger_key():
    """A key nobody configured: tokens it signs must be refused."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(autouse=True)
def api_settings(settings, rsa_key, ec_key):
    """Two configured keys (rotation: RSA and EC), our issuer and audience, roomy rate limits."""
    settings.PATIENT_JWT_PUBLIC_KEYS = _pem(rsa_key) + _pem(ec_key)
    settings.PATIENT_JWT_ISSUER = ISSUER
    settings.PATIENT_JWT_AUDIENCE = AUDIENCE
    settings.PATIENT_JWT_ALGORITHMS = ["RS256", "ES256"]
    settings.PATIENT_APP_RETURN_URL = "https://app.primoro.example/paid"
    settings.API_THROTTLE_RATES = dict.fromkeys(settings.API_THROTTLE_RATES, "100000/min")
    return settings


def sign(claims: dict, key, algorithm: str = "RS256", headers: dict | None = None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def claims_for(patient, **overrides) -> dict:
    now = int(time.time())
    claims = {"sub": str(patient.pk), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def token_for(rsa_key):
    def make(patient, key=None, algorithm="RS256", **overrides) -> str:
        return sign(claims_for(patient, **overrides), key or rsa_key, algorithm)

    return make


def random_ip() -> str:
    """A fresh client address: rate-limit counters live in Redis and outlast a test run."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


@pytest.fixture
def patient_api(token_for):
    """An API client signed in as the given patient."""

    def make(patient) -> APIClient:
        client = APIClient(REMOTE_ADDR=random_ip())
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(patient)}")
        return client

    return make


@pytest.fixture
def staff_api():
    """An API client holding a tablet token for the given staff member."""

    def make(user) -> APIClient:
        client = APIClient()
        client.credentials(
            HTTP_AUTHORIZATION=f"Bearer {staff_api_token_issue(user=user, label='tablet').token}"
        )
        return client

    return make


# --- balances built through the real services -------------------------------------------------


def link_balance(actor, practice, site, patient, *, amount="80.00", target_id="INV-4242", **extra):
    return flows.pay_by_link_issue(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=extra.pop("target_type", TargetType.INVOICE),
        target_id=target_id,
        amount=amount,
        **extra,
    )


def online_balance(actor, practice, site, patient, *, amount="45.00", target_id="REQ-1", **extra):
    return services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=extra.pop("target_type", TargetType.PAYMENT_REQUEST),
        target_id=target_id,
        amount=amount,
        method=PaymentMethod.ONLINE,
        **extra,
    )


def paid(payment, *, reference: str | None = None):
    provider = Actor.provider("dna")
    services.payment_await_customer(
        payment_id=payment.id,
        actor=provider,
        provider_reference=reference or f"txn-{payment.id.hex[:12]}",
    )
    return services.payment_capture(payment_id=payment.id, actor=provider).payment


def money(value: str) -> Decimal:
    return Decimal(value)
