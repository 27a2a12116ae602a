"""HMAC-SHA256 signatures for module-to-module HTTP messages, outbound and inbound.

The scheme (documented in docs/contracts.md) signs a timestamp, the event id
and the raw body with the receiving module's shared secret:

    X-Primoro-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<event id>." + body)>

Signing the timestamp lets a receiver refuse replays outside a window (five
minutes by default); signing the event id (sent in `X-Primoro-Event-Id`) means
a captured message cannot be re-sent inside that window under a new id to get
past the receiver's de-duplication. An event id holds no full stop, so the
signed string splits one way only. A header may carry several `v1=` values
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
MAX_EVENT_ID_LENGTH = 200


class SignatureError(ValueError):
    """The signature header is missing, malformed, too old, or matches no secret."""


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def valid_event_id(event_id: str | None) -> bool:
    """1 to 200 printable ASCII characters, no full stop (it separates the signed parts)."""
    return (
        bool(event_id)
        and len(event_id) <= MAX_EVENT_ID_LENGTH
        and event_id.isascii()
        and event_id.isprintable()
        and "." not in event_id
    )


def _digest(secret: str, timestamp: int, event_id: str, body: bytes) -> str:
    message = f"{timestamp}.{event_id}.".encode() + body
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes | str, *, event_id: str) -> str:
    """The signature header value for `body`, sent as event `event_id` at `timestamp` (unix s)."""
    if not secret:
        raise ValueError("A signing secret is required.")
    if not valid_event_id(event_id):
        raise ValueError("The event id is 1-200 printable ASCII characters without a full stop.")
    digest = _digest(secret, int(timestamp), event_id, _as_bytes(body))
    return f"t={int(timestamp)},{SCHEME}={digest}"


def request_headers(
    secret: str, body: bytes, *, event_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """What any signed message carries: content type, event id and signature.

    A module calling our inbound endpoints sends exactly these.
    """
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: event_id,
        SIGNATURE_HEADER: sign(
            secret,
            int(time.time()) if timestamp is None else timestamp,
            body,
            event_id=event_id,
        ),
    }


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
        **request_headers(secret, body, event_id=event_id, timestamp=timestamp),
        EVENT_TYPE_HEADER: event_type,
        SCHEMA_VERSION_HEADER: str(schema_version),
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
    event_id: str | None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a signature header against the event id and raw body; return its timestamp or raise.

    `secret` may be several secrets (old and new, during a rotation).
    """
    if not header:
        raise SignatureError("Missing signature header.")
    if not valid_event_id(event_id):
        raise SignatureError("Missing or malformed event id.")
    timestamp, signatures = _parse(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("The signature timestamp is outside the allowed window.")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    raw = _as_bytes(body)
    for candidate in secrets:
        if not candidate:
            continue
        expected = _digest(candidate, timestamp, event_id, raw)
        if any(hmac.compare_digest(expected, given) for given in signatures):
            return timestamp
    raise SignatureError("The signature does not match.")
