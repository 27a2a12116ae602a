"""The HMAC-SHA256 scheme of docs/contracts.md: sign, verify, replay window, rotation."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from integrations.signing import SignatureError, sign, signed_headers, verify

SECRET = "whsec-test-4f1c2a9e8b7d6c5a"
BODY = b'{"event_id":"e-1","payload":{"amount":"12.50"}}'
T = 1_767_225_600


def test_header_is_timestamp_and_hmac_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()

    assert sign(SECRET, T, BODY) == f"t={T},v1={expected}"


def test_verify_accepts_a_fresh_signature_and_returns_its_timestamp():
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=T + 299) == T


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("another-secret-value", BODY, T),  # wrong secret
        (SECRET, BODY.replace(b"12.50", b"99.50"), T),  # body changed in transit
        (SECRET, BODY, T + 301),  # replayed after the five-minute window
        (SECRET, BODY, T - 301),  # from too far in the future
    ],
)
def test_verify_refuses(secret, body, now):
    with pytest.raises(SignatureError):
        verify(secret, sign(SECRET, T, BODY), body, now=now)


def test_changing_the_timestamp_breaks_the_signature():
    forged = sign(SECRET, T, BODY).replace(f"t={T}", f"t={T + 60}")

    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, forged, BODY, now=T + 60)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,v1=00", f"t={T}", "v1=00"])
def test_verify_refuses_missing_or_malformed_headers(header):
    with pytest.raises(SignatureError):
        verify(SECRET, header, BODY, now=T)


def test_rotation_any_listed_secret_and_any_v1_value_matches():
    old, new = "old-secret-value-1111", "new-secret-value-2222"
    header = f"{sign(new, T, BODY)},v1={sign(old, T, BODY).split('v1=')[1]}"

    assert verify([old], header, BODY, now=T) == T
    assert verify([new, old], header, BODY, now=T) == T
    with pytest.raises(SignatureError):
        verify(["unrelated-secret-333"], header, BODY, now=T)


def test_signed_headers_carry_the_event_identity_and_a_verifiable_signature():
    headers = signed_headers(
        SECRET, BODY, event_id="e-1", event_type="payment.captured", schema_version=1, attempt=2
    )

    assert headers["X-Primoro-Event-Id"] == "e-1"
    assert headers["X-Primoro-Event-Type"] == "payment.captured"
    assert headers["X-Primoro-Schema-Version"] == "1"
    assert headers["X-Primoro-Delivery-Attempt"] == "2"
    assert headers["Content-Type"] == "application/json"
    verify(SECRET, headers["X-Primoro-Signature"], BODY)


def test_signing_without_a_secret_is_refused():
    with pytest.raises(ValueError, match="secret"):
        sign("", T, BODY)


def test_the_worked_example_in_the_contract_document():
    body = b'{"event_id":"e-1"}'
    header = "t=1767225600,v1=b80a32737fbaf1ce4154b145eff5477c942f98f5800b7babc57b9fef092daf02"

    assert sign("whsec-test-4f1c2a9e8b7d6c5a", 1767225600, body) == header
