"""DNA's two webhook receivers: verify, strip card-adjacent fields, store once, answer at once.

`POST /webhooks/dna/` takes hosted-checkout callbacks (success and failure).
The signature is in the body: base64(HMAC-SHA256(key=client_secret, msg=id +
amount + currency + invoiceId + errorCode + "true"|"false")), the amount in its
shortest form. Only the fields the signature covers are read before it is
checked.

`POST /webhooks/dna/terminal/` takes axept Connect results, signed as RFC 9421
HTTP Message Signatures: `Content-Digest` (SHA-256 of the raw body, checked
too), `Signature-Input` (label sig1, components "@method" "@target-uri"
"content-digest", created, keyid, alg="hmac-sha256") and `Signature`, keyed with
DNA_TERMINAL_WEBHOOK_SECRET. A `created` outside DNA_TERMINAL_WEBHOOK_TOLERANCE_SECONDS
is refused. "@target-uri" is the URL we gave DNA (PUBLIC_BASE_URL + path),
never the Host header, which a proxy may rewrite.

A bad signature is 403 {"code": "invalid_signature"} and nothing is stored.
Every comparison is constant-time. Processing happens in the webhook task
(integrations.webhooks), through integrations.dna.handlers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from decimal import Decimal
from typing import Any

import structlog
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations.dna.client import decode_json, format_amount, text
from integrations.models import WebhookEvent
from integrations.webhooks import webhook_event_store
from primoro_payments import metrics

log = structlog.get_logger("integrations.dna.webhooks")

# Card-adjacent fields: never stored, logged or passed on (PROVIDERS.md).
CARD_ADJACENT_FIELDS = frozenset(
    {"cardTokenId", "cardPanStarred", "cardExpiryDate", "cardholderName"}
)
SIGNATURE_LABEL = "sig1"
REQUIRED_COMPONENTS = ("@method", "@target-uri", "content-digest")
_MAX_BODY_BYTES = 256 * 1024
_SIGNATURE_INPUT = re.compile(r"^\s*(?P<label>[a-z0-9_-]+)=(?P<value>\(.*\).*)$", re.IGNORECASE)
_BYTE_SEQUENCE = re.compile(r"^\s*(?P<label>[a-z0-9_-]+)=:(?P<b64>[A-Za-z0-9+/=]*):\s*$", re.I)


class SignatureInvalid(Exception):
    """Why a webhook was refused (logged; the sender only learns invalid_signature)."""


def _refuse(reason: str, provider: str) -> JsonResponse:
    log.warning("dna_webhook_refused", provider=provider, reason=reason)
    metrics.webhook_event(provider, "rejected")
    return JsonResponse(
        {"code": "invalid_signature", "message": "The webhook signature is not valid."},
        status=403,
    )


def strip_card_fields(value: Any) -> Any:
    """A copy without card-adjacent fields, amounts as strings (JSON-safe, exact)."""
    if isinstance(value, dict):
        return {k: strip_card_fields(v) for k, v in value.items() if k not in CARD_ADJACENT_FIELDS}
    if isinstance(value, list):
        return [strip_card_fields(item) for item in value]
    if isinstance(value, Decimal):
        return format_amount(value)
    return value


# --- hosted checkout callbacks ------------------------------------------------------


def callback_message(data: dict) -> str:
    """The string DNA signs, from the parsed body (numbers in their shortest form)."""
    error_code = data.get("errorCode")
    success = data.get("success")
    if not isinstance(success, bool):
        raise SignatureInvalid("success is not a boolean")
    amount = data.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int | str):
        raise SignatureInvalid("amount is missing")
    try:
        amount_text = format_amount(Decimal(str(amount)))
    except (ArithmeticError, ValueError) as error:
        raise SignatureInvalid("amount is not a number") from error
    if isinstance(error_code, Decimal):
        error_code = format_amount(error_code)
    return (
        f"{text(data.get('id'))}{amount_text}{text(data.get('currency'))}"
        f"{text(data.get('invoiceId'))}{text(error_code)}{'true' if success else 'false'}"
    )


def verify_callback(data: dict, secret: str) -> None:
    signature = data.get("signature")
    if not isinstance(signature, str) or not signature:
        raise SignatureInvalid("no signature")
    if not secret:
        raise SignatureInvalid("DNA_CLIENT_SECRET is not configured")
    expected = base64.b64encode(
        hmac.new(secret.encode(), callback_message(data).encode(), hashlib.sha256).digest()
    )
    if not hmac.compare_digest(expected, signature.encode()):
        raise SignatureInvalid("signature mismatch")


def callback_event_id(invoice_id: str, transaction_id: str, outcome: str) -> str:
    """One stored event per invoice, transaction and outcome (a redelivery is a duplicate)."""
    return f"{invoice_id}:{transaction_id}:{outcome}"


@csrf_exempt
@require_POST
def dna_callback(request: HttpRequest) -> JsonResponse:
    """Hosted checkout callback (success and failure URLs both point here)."""
    body = request.body
    if len(body) > _MAX_BODY_BYTES:
        return JsonResponse({"code": "too_large", "message": "Body too large."}, status=413)
    try:
        # The signature lives in the body, so the body must be read; nothing but the
        # signed fields is looked at until it verifies.
        data = decode_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _refuse("body is not JSON", "dna")
    if not isinstance(data, dict):
        return _refuse("body is not an object", "dna")
    try:
        verify_callback(data, settings.DNA_CLIENT_SECRET)
    except SignatureInvalid as error:
        return _refuse(str(error), "dna")
    transaction_id = text(data.get("id")).strip()
    if not transaction_id:
        # Nothing would tell this callback from any other: refuse it rather than merge them.
        log.warning("dna_callback_without_id")
        return JsonResponse(
            {"code": "invalid_body", "message": "The callback has no transaction id."},
            status=400,
        )
    invoice_id = text(data.get("invoiceId"))
    success = data["success"]
    settled = data.get("settled") is True
    outcome = ("charged" if settled else "authorised") if success else "declined"
    _event, created = webhook_event_store(
        provider=WebhookEvent.Provider.DNA,
        event_id=callback_event_id(invoice_id, transaction_id, outcome),
        event_type=f"payment.{outcome}",
        resource_ref=invoice_id,
        body=strip_card_fields(data),
    )
    return JsonResponse({"status": "stored" if created else "duplicate"}, status=200)


# --- axept Connect terminal results ----------------------------------------------------


def _sf_params(params: str) -> dict[str, str]:
    """The ;name=value parameters of a Signature-Input member (strings unquoted)."""
    found: dict[str, str] = {}
    for part in params.split(";")[1:]:
        name, _, raw = part.strip().partition("=")
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1]
        found[name.strip().lower()] = raw
    return found


def _member(header: str, label: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """The member `label` of a structured-field dictionary header (naive split on commas
    outside parentheses is enough for the values DNA sends)."""
    depth = 0
    start = 0
    for index, char in enumerate(header + ","):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            match = pattern.match(header[start:index])
            if match and match.group("label").lower() == label:
                return match
            start = index + 1
    return None


def _digest_matches(header: str, body: bytes) -> bool:
    expected = base64.b64encode(hashlib.sha256(body).digest())
    for member in header.split(","):
        name, _, value = member.strip().partition("=")
        if name.strip().lower() != "sha-256":
            continue
        value = value.strip()
        if not (value.startswith(":") and value.endswith(":")):
            return False
        return hmac.compare_digest(expected, value[1:-1].encode())
    return False


def verify_terminal_signature(
    *,
    method: str,
    target_uri: str,
    headers: dict[str, str],
    body: bytes,
    secret: str,
    key_id: str,
    tolerance: int,
    now: float | None = None,
) -> None:
    """RFC 9421 (HMAC-SHA256) as axept Connect signs it; raises SignatureInvalid."""
    if not secret:
        raise SignatureInvalid("DNA_TERMINAL_WEBHOOK_SECRET is not configured")
    digest = headers.get("content-digest", "")
    signature_input = headers.get("signature-input", "")
    signature = headers.get("signature", "")
    if not (digest and signature_input and signature):
        raise SignatureInvalid("signature headers missing")
    if not _digest_matches(digest, body):
        raise SignatureInvalid("content-digest does not match the body")
    member = _member(signature_input, SIGNATURE_LABEL, _SIGNATURE_INPUT)
    if member is None:
        raise SignatureInvalid("no sig1 in Signature-Input")
    params_text = member.group("value").strip()
    inner = params_text.split(")", 1)[0]
    components = tuple(c.strip().strip('"').lower() for c in inner.lstrip("(").split())
    if components != REQUIRED_COMPONENTS:
        raise SignatureInvalid(f"covered components {components} are not {REQUIRED_COMPONENTS}")
    params = _sf_params(params_text.split(")", 1)[1])
    if params.get("alg", "hmac-sha256") != "hmac-sha256":
        raise SignatureInvalid("unsupported alg")
    if not hmac.compare_digest(params.get("keyid", "").encode(), key_id.encode()):
        raise SignatureInvalid("unknown keyid")
    try:
        created = int(params["created"])
    except (KeyError, ValueError) as error:
        raise SignatureInvalid("created missing") from error
    now = time.time() if now is None else now
    if abs(now - created) > tolerance:
        raise SignatureInvalid("created outside the accepted window")
    signed = _member(signature, SIGNATURE_LABEL, _BYTE_SEQUENCE)
    if signed is None:
        raise SignatureInvalid("no sig1 in Signature")
    try:
        presented = base64.b64decode(signed.group("b64"), validate=True)
    except (binascii.Error, ValueError) as error:
        raise SignatureInvalid("Signature is not base64") from error
    signature_base = "\n".join(
        [
            f'"@method": {method.upper()}',
            f'"@target-uri": {target_uri}',
            f'"content-digest": {digest.strip()}',
            f'"@signature-params": {params_text}',
        ]
    )
    expected = hmac.new(secret.encode(), signature_base.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, presented):
        raise SignatureInvalid("signature mismatch")


def terminal_webhook_url(path_and_query: str = "/webhooks/dna/terminal/") -> str:
    """The webHookUrl we hand to axept (and so the "@target-uri" it signs)."""
    return settings.PUBLIC_BASE_URL.rstrip("/") + path_and_query


@csrf_exempt
@require_POST
def dna_terminal_webhook(request: HttpRequest) -> JsonResponse:
    """axept Connect result: approved, declined or cancelled on the terminal."""
    body = request.body
    if len(body) > _MAX_BODY_BYTES:
        return JsonResponse({"code": "too_large", "message": "Body too large."}, status=413)
    headers = {
        "content-digest": request.headers.get("Content-Digest", ""),
        "signature-input": request.headers.get("Signature-Input", ""),
        "signature": request.headers.get("Signature", ""),
    }
    try:
        verify_terminal_signature(
            method=request.method,
            target_uri=terminal_webhook_url(request.get_full_path()),
            headers=headers,
            body=body,
            secret=settings.DNA_TERMINAL_WEBHOOK_SECRET,
            key_id=settings.DNA_TERMINAL_WEBHOOK_KEY_ID,
            tolerance=getattr(settings, "DNA_TERMINAL_WEBHOOK_TOLERANCE_SECONDS", 300),
        )
    except SignatureInvalid as error:
        return _refuse(str(error), "dna_terminal")
    try:
        data = decode_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return JsonResponse({"code": "invalid_body", "message": "Body is not JSON."}, status=400)
    if not isinstance(data, dict) or not data.get("uti") or not data.get("status"):
        return JsonResponse(
            {"code": "invalid_body", "message": "uti and status are required."}, status=400
        )
    uti = text(data["uti"])
    status = text(data["status"])
    _event, created = webhook_event_store(
        provider=WebhookEvent.Provider.DNA_TERMINAL,
        event_id=f"{uti}:{status}",
        event_type=f"terminal.{status}",
        resource_ref=uti,
        body=strip_card_fields(data),
    )
    return JsonResponse({"status": "stored" if created else "duplicate"}, status=200)
