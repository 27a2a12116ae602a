"""The HMAC-SHA256 scheme of docs/contracts.md: sign, verify, replay window, event id, rotation."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest

from integrations.signing import SignatureError, request_headers, sign, signed_headers, verify

SECRET = "whsec-test-4f1c2a9e8b7d6c5a"
BODY = b'{"event_id":"e-1","payload":{"amount":"12.50"}}'
EVENT = "e-1"
T = 1_767_225_600
CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"


def test_header_is_timestamp_and_hmac_of_timestamp_event_id_and_body():
    expected = hmac.new(SECRET.encode(), f"{T}.{EVENT}.".encode() + BODY, hashlib.sha256)

    assert sign(SECRET, T, BODY, event_id=EVENT) == f"t={T},v1={expected.hexdigest()}"


def test_verify_accepts_a_fresh_signature_and_returns_its_timestamp():
    header = sign(SECRET, T, BODY, event_id=EVENT)

    assert verify(SECRET, header, BODY, event_id=EVENT, now=T + 299) == T


@pytest.mark.parametrize(
    ("secret", "body", "event_id", "now"),
    [
        ("another-secret-value", BODY, EVENT, T),  # wrong secret
        (SECRET, BODY.replace(b"12.50", b"99.50"), EVENT, T),  # body changed in transit
        (SECRET, BODY, "e-2", T),  # replayed under a new event id
        (SECRET, BODY, EVENT, T + 301),  # replayed after the five-minute window
        (SECRET, BODY, EVENT, T - 301),  # from too far in the future
    ],
)
def test_verify_refuses(secret, body, event_id, now):
    with pytest.raises(SignatureError):
        verify(secret, sign(SECRET, T, BODY, event_id=EVENT), body, event_id=event_id, now=now)


def test_changing_the_timestamp_breaks_the_signature():
    forged = sign(SECRET, T, BODY, event_id=EVENT).replace(f"t={T}", f"t={T + 60}")

    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, forged, BODY, event_id=EVENT, now=T + 60)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,v1=00", f"t={T}", "v1=00"])
def test_verify_refuses_missing_or_malformed_headers(header):
    with pytest.raises(SignatureError):
        verify(SECRET, header, BODY, event_id=EVENT, now=T)


@pytest.mark.parametrize("event_id", [None, "", "e.1", "x" * 201, "é-1", "e\n1"])
def test_event_ids_that_could_blur_the_signed_string_are_refused(event_id):
    with pytest.raises(SignatureError, match="event id"):
        verify(SECRET, f"t={T},v1=00", BODY, event_id=event_id, now=T)
    with pytest.raises(ValueError, match="event id"):
        sign(SECRET, T, BODY, event_id=event_id)


def test_rotation_any_listed_secret_and_any_v1_value_matches():
    old, new = "old-secret-value-1111", "new-secret-value-2222"
    old_value = sign(old, T, BODY, event_id=EVENT).split("v1=")[1]
    header = f"{sign(new, T, BODY, event_id=EVENT)},v1={old_value}"

    assert verify([old], header, BODY, event_id=EVENT, now=T) == T
    assert verify([new, old], header, BODY, event_id=EVENT, now=T) == T
    with pytest.raises(SignatureError):
        verify(["unrelated-secret-333"], header, BODY, event_id=EVENT, now=T)


def test_signed_headers_carry_the_event_identity_and_a_verifiable_signature():
    headers = signed_headers(
        SECRET, BODY, event_id="e-1", event_type="payment.captured", schema_version=1, attempt=2
    )

    assert headers["X-Primoro-Event-Id"] == "e-1"
    assert headers["X-Primoro-Event-Type"] == "payment.captured"
    assert headers["X-Primoro-Schema-Version"] == "1"
    assert headers["X-Primoro-Delivery-Attempt"] == "2"
    assert headers["Content-Type"] == "application/json"
    verify(SECRET, headers["X-Primoro-Signature"], BODY, event_id="e-1")


def test_a_module_calling_us_sends_the_event_id_and_its_signature():
    headers = request_headers(SECRET, BODY, event_id="am-7", timestamp=T)

    assert headers == {
        "Content-Type": "application/json",
        "X-Primoro-Event-Id": "am-7",
        "X-Primoro-Signature": sign(SECRET, T, BODY, event_id="am-7"),
    }


def test_signing_without_a_secret_is_refused():
    with pytest.raises(ValueError, match="secret"):
        sign("", T, BODY, event_id=EVENT)


def test_the_worked_example_in_the_contract_document():
    """The example in docs/contracts.md, read from the page itself."""
    text = CONTRACTS.read_text()
    example = re.search(
        r"Worked example \(secret `(?P<secret>[^`]+)`, `t=(?P<t>\d+)`, event id\s+"
        r"`(?P<event_id>[^`]+)`, body\s+`(?P<body>[^`]+)`\): the signed string is\s+"
        r"`(?P<signed>[^`]+)`\s+and the header is\s+`(?P<header>[^`]+)`",
        text,
    )
    assert example is not None, "the worked example is missing from docs/contracts.md"
    secret, t, event_id, body = (example[k] for k in ("secret", "t", "event_id", "body"))

    assert example["signed"] == f"{t}.{event_id}.{body}"
    assert sign(secret, int(t), body.encode(), event_id=event_id) == example["header"]
