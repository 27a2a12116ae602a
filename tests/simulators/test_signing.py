"""The signature functions, checked against computations written out independently here."""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal

import pytest

from integrations.simulators import signing


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("24.00"), "24"),
        (Decimal("24.0"), "24"),
        (24, "24"),
        (Decimal("12.50"), "12.5"),
        (Decimal("0.05"), "0.05"),
        (Decimal("100"), "100"),
        (Decimal("1000.10"), "1000.1"),
        ("19.99", "19.99"),
        (Decimal("0.00"), "0"),
    ],
)
def test_amounts_are_in_shortest_form(amount, text):
    assert signing.format_amount(amount) == text


def test_float_amounts_are_refused():
    with pytest.raises(TypeError):
        signing.format_amount(12.5)


def test_dna_callback_signature_is_base64_hmac_of_the_concatenation():
    expected = base64.b64encode(
        hmac.new(
            b"s3cret",
            b"0b7c-uuid" + b"12.5" + b"GBP" + b"INV-1" + b"0" + b"true",
            hashlib.sha256,
        ).digest()
    ).decode()

    signature = signing.dna_callback_signature(
        transaction_id="0b7c-uuid",
        amount=Decimal("12.50"),
        currency="GBP",
        invoice_id="INV-1",
        error_code=0,
        success=True,
        secret="s3cret",
    )

    assert signature == expected


def test_dna_callback_message_for_a_failure_without_error_code():
    message = signing.dna_callback_message(
        transaction_id="t1",
        amount=Decimal("24.00"),
        currency="GBP",
        invoice_id="i1",
        error_code=None,
        success=False,
    )
    assert message == "t124GBPi1false"


def test_http_message_signature_headers_and_base():
    body = b'{"status":"approved"}'
    headers = signing.http_message_signature(
        method="post",
        target_uri="https://example.test/webhooks/terminal/?x=1",
        body=body,
        secret="k",
        keyid="key-1",
        created=1700000000,
    )

    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    params = '("@method" "@target-uri" "content-digest");created=1700000000;keyid="key-1";alg="hmac-sha256"'
    signature_base = (
        '"@method": POST\n'
        '"@target-uri": https://example.test/webhooks/terminal/?x=1\n'
        f'"content-digest": {digest}\n'
        f'"@signature-params": {params}'
    )
    mac = base64.b64encode(
        hmac.new(b"k", signature_base.encode(), hashlib.sha256).digest()
    ).decode()
    assert headers == {
        "Content-Digest": digest,
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{mac}:",
    }


def test_gocardless_signature_is_hex_hmac_of_the_raw_body():
    body = b'{"events":[],"meta":{"webhook_id":"WB123"}}'
    assert (
        signing.gocardless_signature(body, "whsec")
        == hmac.new(b"whsec", body, hashlib.sha256).hexdigest()
    )
