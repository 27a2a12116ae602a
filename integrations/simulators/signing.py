"""The signatures the simulators put on what they send, as small pure functions.

Our real webhook verifiers are written separately, to the contract in
PROVIDERS.md; these functions are the simulators' side of the same contract and
are documented precisely so both sides can be checked against each other.

- DNA Payments payment callbacks: `dna_callback_signature`.
- axept Connect terminal webhooks (RFC 9421 HTTP Message Signatures shape,
  HMAC-SHA256): `http_message_signature`.
- GoCardless webhooks: `gocardless_signature`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal

SIGNATURE_LABEL = "sig1"
SIGNATURE_ALGORITHM = "hmac-sha256"
SIGNED_COMPONENTS = ("@method", "@target-uri", "content-digest")


def format_amount(value: Decimal | int | str) -> str:
    """An amount in its shortest decimal form: 24 (not 24.0 or 24.00), 12.5 (not 12.50).

    This is how DNA's PHP plugins print the number they decoded from the JSON
    body, and so the form the callback signature is computed over.
    """
    if isinstance(value, bool | float):
        raise TypeError("amounts are Decimal, int or str, never float or bool")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    text = format(number.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def dna_callback_message(
    *,
    transaction_id: str,
    amount: Decimal | int | str,
    currency: str,
    invoice_id: str,
    error_code: int | str | None,
    success: bool,
) -> str:
    """The string DNA signs: id + amount + currency + invoiceId + errorCode + "true"/"false".

    A missing errorCode contributes the empty string; a numeric one its digits.
    """
    code = "" if error_code is None else str(error_code)
    return (
        f"{transaction_id}{format_amount(amount)}{currency}{invoice_id}{code}"
        f"{'true' if success else 'false'}"
    )


def dna_callback_signature(
    *,
    transaction_id: str,
    amount: Decimal | int | str,
    currency: str,
    invoice_id: str,
    error_code: int | str | None,
    success: bool,
    secret: str,
) -> str:
    """base64(HMAC-SHA256(key=client_secret, msg=dna_callback_message(...)))."""
    message = dna_callback_message(
        transaction_id=transaction_id,
        amount=amount,
        currency=currency,
        invoice_id=invoice_id,
        error_code=error_code,
        success=success,
    )
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def content_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest header value: `sha-256=:<base64 SHA-256 of the body>:`."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}:"


def signature_params(*, created: int, keyid: str) -> str:
    """The Signature-Input member value (after `sig1=`), also the last line of the base."""
    components = " ".join(f'"{name}"' for name in SIGNED_COMPONENTS)
    return f'({components});created={created};keyid="{keyid}";alg="{SIGNATURE_ALGORITHM}"'


def signature_base(*, method: str, target_uri: str, digest: str, created: int, keyid: str) -> str:
    """The RFC 9421 signature base the terminal webhook signs, lines joined by "\\n".

    Exactly (no trailing newline):

        "@method": POST
        "@target-uri": <the webHookUrl exactly as given in POST /axept/transaction>
        "content-digest": sha-256=:<base64 SHA-256 of the raw body>:
        "@signature-params": ("@method" "@target-uri" "content-digest");created=<unix s>;keyid="<id>";alg="hmac-sha256"
    """
    return "\n".join(
        [
            f'"@method": {method.upper()}',
            f'"@target-uri": {target_uri}',
            f'"content-digest": {digest}',
            f'"@signature-params": {signature_params(created=created, keyid=keyid)}',
        ]
    )


def http_message_signature(
    *, method: str, target_uri: str, body: bytes, secret: str, keyid: str, created: int
) -> dict[str, str]:
    """The three headers of a signed terminal webhook.

    Content-Digest: sha-256=:<b64>:
    Signature-Input: sig1=("@method" "@target-uri" "content-digest");created=..;keyid="..";alg="hmac-sha256"
    Signature: sig1=:<base64 HMAC-SHA256(key=secret, msg=signature_base(...))>:
    """
    digest = content_digest(body)
    base = signature_base(
        method=method, target_uri=target_uri, digest=digest, created=created, keyid=keyid
    )
    mac = hmac.new(secret.encode(), base.encode(), hashlib.sha256).digest()
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{SIGNATURE_LABEL}={signature_params(created=created, keyid=keyid)}",
        "Signature": f"{SIGNATURE_LABEL}=:{base64.b64encode(mac).decode('ascii')}:",
    }


def gocardless_signature(body: bytes, secret: str) -> str:
    """Webhook-Signature header value: hex HMAC-SHA256 of the raw body, key = endpoint secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
