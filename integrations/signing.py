"""HMAC-SHA256 signatures for module-to-module HTTP messages, outbound and inbound.

The scheme (documented in docs/contracts.md) signs a timestamp and the raw
body with the receiving module's shared secret:

    X-Primoro-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

Signing the timestamp with the body lets a receiver refuse replays outside a
window (five minutes by default). A header may carry several `v1=` values
while a secret is being rotated; one match is enough. Verification compares in
constant time. Our inbound trigger endpoints verify with the same function.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "X-Primoro-Signature"
EVENT_ID_HEADER = "X-Primoro-Event-Id"
EVENT_TYPE_HEADER = "X-Primoro-Event-Type"
SCHEMA_VERSION_HEADER = "X-Primoro-Schema-Version"
ATTEMPT_HEADER = "X-Primoro-Delivery-Attempt"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, too old, or matches no secret."""


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes | str) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds)."""
    if not secret:
        raise ValueError("A signing secret is required.")
    return f"t={int(timestamp)},{SCHEME}={_digest(secret, int(timestamp), _as_bytes(body))}"


def signed_headers(
    secret: str,
    body: bytes,
    *,
    event_id: str,
    event_type: str,
    schema_version: int,
    attempt: int | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Every header an outbound message carries, the signature included."""
    headers = {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
        SCHEMA_VERSION_HEADER: str(schema_version),
        SIGNATURE_HEADER: sign(secret, int(time.time()) if timestamp is None else timestamp, body),
    }
    if attempt is not None:
        headers[ATTEMPT_HEADER] = str(attempt)
    return headers


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp = None
    signatures = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("Malformed signature header.")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("Malformed signature timestamp.") from None
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError(f"The signature header needs t= and {SCHEME}=.")
    return timestamp, signatures


def verify(
    secret: str | Iterable[str],
    header: str | None,
    body: bytes | str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a signature header against the raw body; return its timestamp or raise.

    `secret` may be several secrets (old and new, during a rotation).
    """
    if not header:
        raise SignatureError("Missing signature header.")
    timestamp, signatures = _parse(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("The signature timestamp is outside the allowed window.")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    raw = _as_bytes(body)
    for candidate in secrets:
        if not candidate:
            continue
        expected = _digest(candidate, timestamp, raw)
        if any(hmac.compare_digest(expected, given) for given in signatures):
            return timestamp
    raise SignatureError("The signature does not match.")
