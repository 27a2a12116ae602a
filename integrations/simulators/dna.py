"""DNA Payments simulator: OAuth, hosted checkout, Pay by Link, transactions, axept terminals.

One port serves the paths of all three DNA hosts, so for local work
DNA_OAUTH_URL = DNA_API_URL = DNA_PAY_URL = http://127.0.0.1:8601. Paths and
fields follow /work/shared/PROVIDERS.md; where DNA publishes nothing the
choice made here is written below so our client and this simulator agree.
Amounts are JSON numbers in major units, in their shortest form (24, 12.5);
our client should parse with `parse_float=Decimal`. Errors outside OAuth are
`{"code": "...", "message": "..."}` with a 4xx status.

Settings (environment): DNA_CLIENT_SECRET (required; development fallback:
.local/dev-secrets.json), DNA_CLIENT_ID (when set, token requests must use it;
unset = any client_id), DNA_TERMINAL_WEBHOOK_SECRET (required, same fallback),
DNA_TERMINAL_WEBHOOK_KEY_ID (default "dna-sim-terminal"), DNA_TERMINAL_API_KEY
(when set, /axept/auth must present it), DNA_SIM_PUBLIC_URL (base URL written
into links and pages, default the listening address), DNA_SIM_TERMINALS
(comma-separated terminal ids shown on the index page), DNA_SIM_FEE_PERCENT /
DNA_SIM_FEE_FIXED (settlement fees, default 1.5 % + 0.20).

OAuth — `POST /oauth2/token`, form-encoded: grant_type=client_credentials,
scope, client_id, client_secret; a scope containing `payment` (checkout) also
needs invoiceId, amount, currency, terminal, and the token is bound to them.
Scopes: payment, integration_hosted, integration_embedded,
integration_seamless, webapi, pay_by_link. Answer: {access_token, expires_in
(604800 when the scope has webapi, else 7200), scope, token_type: "Bearer"};
a wrong client_id/client_secret is 401 {"error": "invalid_client"}.

Hosted checkout — what our client must send. The supported integration is
DNA's own script: a page of ours loads `<DNA_PAY_URL>/checkout/payment-api.js`
and calls `window.DNAPayments.openPaymentPage(paymentData)` (after
`DNAPayments.configure({isTestMode: ...})`). The simulator serves a script of
that name with the same two functions, so the same page works against the real
host and here. paymentData is:

    {"invoiceId": "<uuid, no personal data>", "description": "...",
     "amount": 24.5, "currency": "GBP", "language": "en-gb",
     "transactionType": "SALE" | "AUTH" | "PRE-AUTH" | "VERIFICATION",   (default SALE)
     "paymentSettings": {"terminalId": "...", "returnUrl": "...",
         "failureReturnUrl": "...", "callbackUrl": "...", "failureCallbackUrl": "..."},
     "customerDetails": {"email": "...", "accountDetails": {"accountId": "..."},
         "billingAddress": {"firstName": "...", "lastName": "...", ...}},
     "merchantCustomData": "<string, echoed in the callback>",
     "paymentMethods": ["googlepay", "applepay"],   (simulator: show wallet buttons)
     "auth": <the whole /oauth2/token answer, or just its access_token>}

The script navigates to `GET /checkout/?params=<base64url(JSON paymentData)>`
(the real page expects DNA's own LZ-string encoding, which only its script
produces, so do not build that URL server-side against the real host;
`checkout_page_url()` builds the simulator's form for tests and demos). The
token must be a live `payment` token whose invoiceId, amount, currency and
terminal equal the paymentData's. The page has no card field: Pay, Decline
and (when asked for) wallet buttons. Pay/wallet POSTs the signed callback to
callbackUrl and redirects the browser (303) to returnUrl; Decline does the same
with failureCallbackUrl / failureReturnUrl. The callback is sent, and its
answer awaited (10 s timeout), before the redirect.

Callback body: {id, invoiceId, amount, currency, accountId, message,
secure3D, rrn, errorCode (0 on success, 1102 on a decline), success, settled
(true for SALE, false for AUTH/PRE-AUTH/VERIFICATION), paymentMethod ("card",
"googlepay", "applepay"), cardTokenId, cardExpiryDate ("MM/YY"),
cardSchemeName, cardPanStarred (masked with asterisks), cardholderName,
merchantCustomData, signature}, with signature =
base64(HMAC-SHA256(key=client_secret, msg=id + amount + currency + invoiceId +
errorCode + "true"|"false")), amount in its shortest form (signing.py).

Pay by Link (Bearer token with scope pay_by_link or webapi):
`POST /v1/payment-links` → 201 with the PROVIDERS.md fields plus
transactionType and merchantCustomData; `url` opens the simulator's page for
the link. `GET /v1/payment-links/{id}/`; `GET /v1/payment-links?status=a,b&page=1&size=20`
→ {"data": [...], "totalCount": n, "page": p, "size": s};
`POST /v1/payment-links/{id}/cancel` → the link, or 409 `link_not_cancellable`
unless it is active, viewed or attempted. Opening the page moves active →
viewed; any outcome → attempted; a successful payment → paid; past
expirationDate → expired.

Transactions (Bearer token with scope webapi): `POST /transaction/operation/charge
{id, amount?}` (AUTH only, amount ≤ authorised, default all),
`POST /transaction/operation/refund {id, amount?, reason?}` (CHARGE only; omitted
amount = what is left; partial refunds up to the charged amount; the answer's
`id` is the refund's own id, `parentId` the original), `POST
/transaction/operation/cancel {id}` (AUTH, or CHARGE not yet settled and not
refunded). All answer {success: true, id, parentId (the original for a
refund, else null), invoiceId, amount, currency, status, message,
refundedAmount, remainingAmount}.
`GET /v2/transactions/{invoiceId}/list?field=invoiceId` → {"data": [...],
"totalCount": n}; each item: id, parentId, invoiceId, transactionType (SALE,
AUTH, PRE-AUTH, VERIFICATION, REFUND), status (AUTH, CHARGE, CANCEL, DECLINED,
VERIFICATION, REFUND), amount, chargedAmount, refundedAmount, currency,
terminalId, paymentMethod, createdDate, settlementBatchId.

Idempotency: every POST outside /sim/ honours an `Idempotency-Key` header.
The same key with the same path and body gets the first answer again
(header `Idempotent-Replayed: true`) and no second effect; the same key with a
different path or body is 422 `idempotency_key_reused`; a key whose first
request is still running is 409 `idempotency_request_in_progress`. Other 4xx
answers are replayed too; 401, 403, 5xx and requests stopped by an injected
fault leave no record, so a retry with the same key runs.

axept Connect terminals: `POST /axept/auth {merchantId, keyId, key}` →
{token, ExpiresAt}. With `Authorization: Bearer <token>`:
`POST /axept/transaction {uti (GUID), webHookUrl, tid, amount, currency,
expirationDate, reference (1-50 letters/digits), transactionType?}` → 202
{uti, tid, status: "pending", ...}; a second pending transaction on the same
terminal is 409 `terminal_busy`; the same uti again with the same content is
answered again. `GET /axept/transaction/{uti}` → {uti, tid, status (pending,
approved, declined, cancelled, timed_out), amount, currency, reference,
result}, or 404 with status "unknown". The patient is played by
`POST /axept/terminals/{tid}/action {"action": "approve"|"decline"|"cancel"|"timeout"}`
(JSON, or the form on the page `GET /axept/terminals/{tid}`). Each POSTs this
JSON to webHookUrl:

    {"uti", "tid", "status": "approved"|"declined"|"cancelled"|"timed_out",
     "transactionId" (null unless a card was presented), "amount", "currency",
     "reference", "authCode", "rrn",
     "errorCode", "message", "paymentMethod", "cardSchemeName", "cardPanStarred",
     "timestamp"}

signed as RFC 9421 HTTP Message Signatures with HMAC-SHA256 over the base
documented in signing.signature_base (components "@method", "@target-uri" =
webHookUrl exactly as given, "content-digest"; keyid DNA_TERMINAL_WEBHOOK_KEY_ID;
key DNA_TERMINAL_WEBHOOK_SECRET as UTF-8 bytes). Whether the real terminal
reports its own time-out is not published: DNA_SIM_TERMINAL_TIMEOUT_WEBHOOK
(default true) decides, and when false `timeout` sends nothing and leaves status
timed_out for our janitor to find. `"webhook": false` with any action settles
it without sending (a webhook lost on the way). An approved terminal payment
is a CHARGE transaction (invoiceId = reference) that can be refunded.

Control endpoints (not DNA's): `POST /sim/settlements` makes a payout batch of
every CHARGE not yet settled and every refund not yet settled:
{batch_id, settled_at, currency, items: [{transactionId, parentId, invoiceId,
type: "sale"|"refund"|"chargeback", amount, fee, currency}], totals: {sales,
refunds (chargebacks included), fees, net}}, money as decimal strings ("12.50"); DNA's real report format is not
published, so our parser must stay one setting away from it.
`POST /sim/chargebacks {transactionId, amount?}` makes the next batch carry a
chargeback item for that transaction. `GET /sim/settlements` lists the batches. `GET /sim/deliveries` lists the
callbacks and webhooks sent (card-adjacent fields redacted);
`POST /sim/deliveries/{n}/redeliver` sends delivery n again, byte for byte.
Plus /sim/faults, /sim/requests and /sim/reset (see base.py). `GET /` is an
index page for demos.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode, urlsplit

from integrations.simulators import base, signing
from integrations.simulators.base import (
    HttpError,
    Request,
    Response,
    SimulatorApp,
    html_response,
    isoformat,
    json_response,
    redirect,
    utcnow,
)
from integrations.simulators.config import env_str, optional_secret, required_secret

DEFAULT_PORT = 8601
KNOWN_SCOPES = frozenset(
    {
        "payment",
        "integration_hosted",
        "integration_embedded",
        "integration_seamless",
        "webapi",
        "pay_by_link",
    }
)
PAYMENT_TOKEN_SECONDS = 7200
WEBAPI_TOKEN_SECONDS = 604800
TERMINAL_TOKEN_SECONDS = 3600
DECLINE_ERROR_CODE = 1102
TRANSACTION_TYPES = ("SALE", "AUTH", "PRE-AUTH", "VERIFICATION")
LINK_OPEN_STATUSES = ("active", "viewed", "attempted")
LINK_STATUSES = (*LINK_OPEN_STATUSES, "paid", "cancelled", "expired")
WALLETS = {"googlepay": "Google Pay", "applepay": "Apple Pay"}
TERMINAL_ACTIONS = ("approve", "decline", "cancel", "timeout")
REFERENCE_RE = re.compile(r"^[A-Za-z0-9]{1,50}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# Masked with asterisks: no run of 13-19 digits, so nothing here is a card number.
MASKED_PAN = "4242********4242"
CARD_SCHEME = "VISA"
TWO_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class DnaConfig:
    client_secret: str
    terminal_webhook_secret: str
    client_id: str | None = None
    terminal_webhook_key_id: str = "dna-sim-terminal"
    terminal_api_key: str | None = None
    public_url: str | None = None
    terminals: tuple[str, ...] = ("SIMTERM01", "SIMTERM02")
    fee_percent: Decimal = Decimal("1.5")
    fee_fixed: Decimal = Decimal("0.20")
    delivery_timeout: float = 10.0
    terminal_timeout_webhook: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DnaConfig:
        """The settings named in the module docstring; a missing secret raises SimulatorConfigError."""
        terminals = env_str("DNA_SIM_TERMINALS", "SIMTERM01,SIMTERM02", environ=environ)
        return cls(
            client_secret=required_secret("DNA_CLIENT_SECRET", environ=environ),
            terminal_webhook_secret=required_secret("DNA_TERMINAL_WEBHOOK_SECRET", environ=environ),
            client_id=env_str("DNA_CLIENT_ID", "", environ=environ) or None,
            terminal_webhook_key_id=env_str(
                "DNA_TERMINAL_WEBHOOK_KEY_ID", "dna-sim-terminal", environ=environ
            ),
            terminal_api_key=optional_secret("DNA_TERMINAL_API_KEY", environ=environ),
            public_url=env_str("DNA_SIM_PUBLIC_URL", "", environ=environ) or None,
            terminals=tuple(t.strip() for t in terminals.split(",") if t.strip()),
            fee_percent=Decimal(env_str("DNA_SIM_FEE_PERCENT", "1.5", environ=environ)),
            fee_fixed=Decimal(env_str("DNA_SIM_FEE_FIXED", "0.20", environ=environ)),
            terminal_timeout_webhook=env_str(
                "DNA_SIM_TERMINAL_TIMEOUT_WEBHOOK", "true", environ=environ
            ).lower()
            in {"1", "true", "yes", "on"},
        )


# -- state ------------------------------------------------------------------------


@dataclass
class Token:
    scopes: frozenset[str]
    expires_at: datetime
    invoice_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    terminal: str | None = None


@dataclass
class Refund:
    id: str
    amount: Decimal
    reason: str | None
    created: datetime
    settlement_batch_id: str | None = None


@dataclass
class Transaction:
    id: str
    invoice_id: str
    transaction_type: str
    status: str
    amount: Decimal
    currency: str
    terminal_id: str
    payment_method: str
    created: datetime
    charged_amount: Decimal = Decimal(0)
    refunds: list[Refund] = field(default_factory=list)
    settlement_batch_id: str | None = None

    @property
    def refunded_amount(self) -> Decimal:
        return sum((refund.amount for refund in self.refunds), Decimal(0))

    @property
    def remaining_amount(self) -> Decimal:
        return self.charged_amount - self.refunded_amount


@dataclass
class Checkout:
    """What a hosted page (a checkout session or a payment link) needs to take a payment."""

    invoice_id: str
    amount: Decimal
    currency: str
    description: str
    terminal_id: str
    transaction_type: str
    callback_url: str | None
    failure_callback_url: str | None
    customer_details: dict[str, Any]
    merchant_custom_data: Any
    wallets: tuple[str, ...]
    cardholder_name: str


@dataclass
class CheckoutSession:
    id: str
    checkout: Checkout
    return_url: str
    failure_return_url: str
    created: datetime
    status: str = "open"  # open, paid, declined
    transaction_id: str | None = None


@dataclass
class PaymentLink:
    id: str
    checkout: Checkout
    customer_name: str
    expiration: datetime
    created: datetime
    status: str = "active"
    viewed: datetime | None = None
    attempted: datetime | None = None
    paid: datetime | None = None
    cancelled: datetime | None = None
    transaction_id: str | None = None


@dataclass
class TerminalTransaction:
    uti: str
    tid: str
    webhook_url: str
    amount: Decimal
    currency: str
    reference: str
    transaction_type: str
    expiration: datetime
    created: datetime
    request_fingerprint: str
    status: str = "pending"
    result: dict[str, Any] | None = None


@dataclass
class IdempotencyRecord:
    fingerprint: tuple[str, str]
    response: Response | None = None


# -- helpers ----------------------------------------------------------------------


def parse_amount(value: Any, name: str = "amount", *, allow_zero: bool = False) -> Decimal:
    """A money amount from JSON or a form: a number or numeric string, at most 2 decimals."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise HttpError(400, "validation_error", f"{name} must be a decimal number.")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as error:
        raise HttpError(400, "validation_error", f"{name} must be a decimal number.") from error
    if not amount.is_finite() or amount < 0 or (amount == 0 and not allow_zero):
        raise HttpError(400, "validation_error", f"{name} must be a positive amount.")
    if amount != amount.quantize(TWO_PLACES):
        raise HttpError(400, "validation_error", f"{name} has more than two decimal places.")
    return amount


def parse_currency(value: Any) -> str:
    if not isinstance(value, str) or not CURRENCY_RE.match(value):
        raise HttpError(400, "validation_error", "currency must be a 3-letter ISO 4217 code.")
    return value


def required_text(data: Mapping[str, Any], name: str, *, max_length: int = 255) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, "validation_error", f"{name} is required.")
    if len(value) > max_length:
        raise HttpError(400, "validation_error", f"{name} is longer than {max_length}.")
    return value.strip()


def optional_url(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in {"http", "https"}:
        raise HttpError(400, "validation_error", f"{name} must be an http(s) URL.")
    return value


def money_text(amount: Decimal, currency: str) -> str:
    """How a page shows an amount: £24.00, or 24.00 EUR."""
    fixed = f"{amount.quantize(TWO_PLACES):,}"
    return f"£{fixed}" if currency == "GBP" else f"{fixed} {currency}"


def _letters(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(length))


def _digits(length: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(length))


def _cardholder_name(customer_details: Mapping[str, Any], fallback: str) -> str:
    billing = customer_details.get("billingAddress") or {}
    if isinstance(billing, dict):
        name = " ".join(str(billing.get(k, "")).strip() for k in ("firstName", "lastName"))
        if name.strip():
            return name.strip()
    return fallback


def _account_id(customer_details: Mapping[str, Any]) -> str:
    account = customer_details.get("accountDetails") or {}
    return str(account.get("accountId", "")) if isinstance(account, dict) else ""


def _wallets(value: Any) -> tuple[str, ...]:
    """paymentMethods may list names or {"name": ...} objects; unknown ones are ignored."""
    names = []
    for item in value or []:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name.lower() in WALLETS:
            names.append(name.lower())
    return tuple(dict.fromkeys(names))


def _b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


def checkout_page_url(base_url: str, payment_data: Mapping[str, Any]) -> str:
    """The simulator's hosted-page URL for payment_data (the simulator's encoding only)."""
    raw = base.dump_json(dict(payment_data))
    encoded = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    return f"{base_url.rstrip('/')}/checkout/?{urlencode({'params': encoded})}"


def _canonical_body(request: Request) -> str:
    """Same meaning, same fingerprint: JSON and forms are compared parsed, key order ignored."""
    if request.content_type == "application/json":
        try:
            parsed = json.loads(request.body or b"null", parse_float=str)
            return json.dumps(parsed, sort_keys=True, separators=(",", ":"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            return json.dumps(sorted(request.form().items()))
        except HttpError:
            pass
    return hashlib.sha256(request.body).hexdigest()


# -- the simulator ----------------------------------------------------------------


class DnaSimulator(SimulatorApp):
    name = "dna"

    def __init__(self, config: DnaConfig) -> None:
        super().__init__()
        self.config = config
        if config.public_url:
            self.base_url = config.public_url.rstrip("/")
        self._signing_key = secrets.token_bytes(32)  # the axept "JWT" signer
        self.reset_state()
        r = self.route
        r("GET", r"/", self._index)
        r("POST", r"/oauth2/token", self._oauth_token)
        r("GET", r"/checkout/payment-api\.js", self._payment_api_js)
        r("GET", r"/checkout/?", self._checkout_open)
        r("GET", r"/checkout/sessions/(?P<sid>[0-9a-f]{32})", self._checkout_page)
        r("POST", r"/checkout/sessions/(?P<sid>[0-9a-f]{32})/complete", self._checkout_complete)
        r("GET", r"/checkout/link/(?P<link_id>[0-9a-f-]{36})/?", self._link_page)
        r("POST", r"/checkout/link/(?P<link_id>[0-9a-f-]{36})/complete", self._link_complete)
        r("POST", r"/v1/payment-links/?", self._link_create)
        r("GET", r"/v1/payment-links/?", self._link_list)
        r("GET", r"/v1/payment-links/(?P<link_id>[^/]+)/?", self._link_get)
        r("POST", r"/v1/payment-links/(?P<link_id>[^/]+)/cancel/?", self._link_cancel)
        r("POST", r"/transaction/operation/charge", self._op_charge)
        r("POST", r"/transaction/operation/stored-card-charge", self._op_stored_card_charge)
        r("POST", r"/transaction/operation/refund", self._op_refund)
        r("POST", r"/transaction/operation/cancel", self._op_cancel)
        r("GET", r"/v2/transactions/(?P<invoice_id>[^/]+)/list", self._transaction_list)
        r("POST", r"/axept/auth", self._axept_auth)
        r("POST", r"/axept/transaction", self._axept_create)
        r("GET", r"/axept/transaction/(?P<uti>[^/]+)", self._axept_status)
        r("GET", r"/axept/terminals/(?P<tid>[^/]+)", self._terminal_page)
        r("POST", r"/axept/terminals/(?P<tid>[^/]+)/action", self._terminal_action)
        r("POST", r"/sim/settlements", self._settle)
        r("POST", r"/sim/chargebacks", self._chargeback)
        r("GET", r"/sim/settlements", self._settlement_list)
        r("GET", r"/sim/deliveries", self._delivery_list)
        r("POST", r"/sim/deliveries/(?P<number>\d+)/redeliver", self._redeliver)

    def reset_state(self) -> None:
        with self.lock:
            self._tokens: dict[str, Token] = {}
            self._terminal_tokens: dict[str, datetime] = {}
            self._sessions: dict[str, CheckoutSession] = {}
            self._session_keys: dict[tuple[str, str], str] = {}
            self._links: dict[str, PaymentLink] = {}
            self._transactions: dict[str, Transaction] = {}
            self._terminal_txns: dict[str, TerminalTransaction] = {}
            self._pending_by_tid: dict[str, str] = {}
            self._idempotency: dict[str, IdempotencyRecord] = {}
            self._settlements: list[dict[str, Any]] = []
            self._chargebacks: list[dict[str, Any]] = []
            self._deliveries: list[dict[str, Any]] = []
            self._delivery_raw: dict[int, tuple[str, bytes, dict[str, str]]] = {}

    # -- idempotency wraps every provider POST ------------------------------------

    def handle(self, request: Request) -> Response:
        key = request.header("Idempotency-Key")
        if request.method != "POST" or not key or request.path.startswith("/sim/"):
            return super().handle(request)
        fingerprint = (request.path, _canonical_body(request))
        with self.lock:
            record = self._idempotency.get(key)
            if record is None:
                record = self._idempotency[key] = IdempotencyRecord(fingerprint)
            elif record.fingerprint != fingerprint:
                raise HttpError(
                    422,
                    "idempotency_key_reused",
                    "This Idempotency-Key was used with a different request.",
                )
            elif record.response is None:
                raise HttpError(
                    409,
                    "idempotency_request_in_progress",
                    "The first request with this Idempotency-Key is still running.",
                )
            else:
                first = record.response
                return Response(
                    first.status,
                    first.body,
                    first.content_type,
                    {**first.headers, "Idempotent-Replayed": "true"},
                )
        try:
            response = super().handle(request)
        except HttpError as error:
            response = self.error_response(error)
        except BaseException:
            with self.lock:
                self._idempotency.pop(key, None)
            raise
        with self.lock:
            if response.status in {401, 403} or response.status >= 500:
                self._idempotency.pop(key, None)  # not an answer to the request: a retry may run
            else:
                record.response = response
        return response

    # -- OAuth ---------------------------------------------------------------------

    def _oauth_error(self, status: int, error: str, description: str) -> Response:
        return json_response({"error": error, "error_description": description}, status)

    def _oauth_token(self, request: Request) -> Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return self._oauth_error(
                400, "invalid_request", "Send application/x-www-form-urlencoded."
            )
        form = request.form()
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(
                400, "unsupported_grant_type", "Only client_credentials is supported."
            )
        client_ok = self.config.client_id is None or hmac.compare_digest(
            form.get("client_id", "").encode(), self.config.client_id.encode()
        )
        secret_ok = hmac.compare_digest(
            form.get("client_secret", "").encode(), self.config.client_secret.encode()
        )
        if not (form.get("client_id") and client_ok and secret_ok):
            return self._oauth_error(401, "invalid_client", "Client authentication failed.")
        scope_text = form.get("scope", "").strip()
        scopes = frozenset(scope_text.split())
        if not scopes or not scopes <= KNOWN_SCOPES:
            return self._oauth_error(
                400, "invalid_scope", f"Unknown or missing scope: {scope_text!r}."
            )
        token = Token(scopes=scopes, expires_at=utcnow())
        if "payment" in scopes:
            missing = [
                n for n in ("invoiceId", "amount", "currency", "terminal") if not form.get(n)
            ]
            if missing:
                return self._oauth_error(
                    400, "invalid_request", f"A payment token needs {', '.join(missing)}."
                )
            try:
                token.amount = parse_amount(form["amount"], allow_zero=True)
                token.currency = parse_currency(form["currency"])
            except HttpError as error:
                return self._oauth_error(400, "invalid_request", error.message)
            token.invoice_id = form["invoiceId"]
            token.terminal = form["terminal"]
        lifetime = WEBAPI_TOKEN_SECONDS if "webapi" in scopes else PAYMENT_TOKEN_SECONDS
        token.expires_at = utcnow() + timedelta(seconds=lifetime)
        access_token = secrets.token_urlsafe(32)
        with self.lock:
            self._tokens[access_token] = token
        return json_response(
            {
                "access_token": access_token,
                "expires_in": lifetime,
                "scope": scope_text,
                "token_type": "Bearer",
            }
        )

    def _token(self, access_token: str | None) -> Token | None:
        if not access_token:
            return None
        with self.lock:
            token = self._tokens.get(access_token)
        if token is None or token.expires_at <= utcnow():
            return None
        return token

    def _require_scope(self, request: Request, *allowed: str) -> Token:
        token = self._token(request.bearer)
        if token is None:
            raise HttpError(401, "unauthorized", "A valid Bearer token is required.")
        if not token.scopes & set(allowed):
            raise HttpError(
                403, "insufficient_scope", f"The token needs scope {' or '.join(allowed)}."
            )
        return token

    # -- hosted checkout ---------------------------------------------------------------

    def _payment_api_js(self, request: Request) -> Response:
        script = PAYMENT_API_JS.replace("__BASE__", json.dumps(self.base_url))
        return Response(body=script.encode(), content_type="text/javascript; charset=utf-8")

    def _checkout_open(self, request: Request) -> Response:
        try:
            data = json.loads(_b64url_decode(request.query.get("params", "")), parse_float=Decimal)
        except (binascii.Error, ValueError) as error:
            return self._error_page(400, "This payment link is not valid", f"params: {error}")
        if not isinstance(data, dict):
            return self._error_page(
                400, "This payment link is not valid", "params is not an object."
            )
        auth = data.get("auth")
        access_token = auth.get("access_token") if isinstance(auth, dict) else auth
        token = self._token(access_token if isinstance(access_token, str) else None)
        if token is None or "payment" not in token.scopes:
            return self._error_page(401, "This payment has expired", "The auth token is not valid.")
        settings = data.get("paymentSettings") or {}
        try:
            checkout = self._checkout_from(data, settings)
            return_url = optional_url(settings.get("returnUrl"), "returnUrl")
            failure_return_url = optional_url(settings.get("failureReturnUrl"), "failureReturnUrl")
        except HttpError as error:
            return self._error_page(400, "This payment cannot be taken", error.message)
        if not (return_url and failure_return_url):
            return self._error_page(
                400, "This payment cannot be taken", "returnUrl and failureReturnUrl are required."
            )
        bound = (token.invoice_id, token.amount, token.currency, token.terminal)
        asked = (checkout.invoice_id, checkout.amount, checkout.currency, checkout.terminal_id)
        if bound != asked:
            return self._error_page(
                400,
                "This payment cannot be taken",
                "The token was issued for a different invoiceId, amount, currency or terminal.",
            )
        with self.lock:
            if self._invoice_paid(checkout.invoice_id):
                return self._error_page(409, "Already paid", "This invoice has already been paid.")
            key = (access_token, checkout.invoice_id)
            sid = self._session_keys.get(key)
            if sid is None or self._sessions[sid].status != "open":
                sid = uuid.uuid4().hex
                self._sessions[sid] = CheckoutSession(
                    id=sid,
                    checkout=checkout,
                    return_url=return_url,
                    failure_return_url=failure_return_url,
                    created=utcnow(),
                )
                self._session_keys[key] = sid
        return redirect(f"{self.base_url}/checkout/sessions/{sid}")

    def _checkout_from(
        self, data: Mapping[str, Any], settings: Mapping[str, Any], *, fallback_name: str = ""
    ) -> Checkout:
        transaction_type = str(data.get("transactionType") or "SALE").upper()
        if transaction_type not in TRANSACTION_TYPES:
            raise HttpError(
                400, "validation_error", f"transactionType must be one of {TRANSACTION_TYPES}."
            )
        customer = data.get("customerDetails") or {}
        if not isinstance(customer, dict):
            raise HttpError(400, "validation_error", "customerDetails must be an object.")
        invoice_id = data.get("invoiceId")
        if not isinstance(invoice_id, str) or not invoice_id.strip():
            raise HttpError(400, "validation_error", "invoiceId is required.")
        return Checkout(
            invoice_id=invoice_id,
            amount=parse_amount(data.get("amount"), allow_zero=transaction_type == "VERIFICATION"),
            currency=parse_currency(data.get("currency")),
            description=str(data.get("description") or ""),
            terminal_id=required_text(settings, "terminalId"),
            transaction_type=transaction_type,
            callback_url=optional_url(settings.get("callbackUrl"), "callbackUrl"),
            failure_callback_url=optional_url(
                settings.get("failureCallbackUrl"), "failureCallbackUrl"
            ),
            customer_details=customer,
            merchant_custom_data=data.get("merchantCustomData"),
            wallets=_wallets(data.get("paymentMethods")),
            cardholder_name=_cardholder_name(customer, fallback_name or "SIMULATED CARDHOLDER"),
        )

    def _invoice_paid(self, invoice_id: str) -> bool:
        return any(
            t.invoice_id == invoice_id and t.status in {"AUTH", "CHARGE", "VERIFICATION"}
            for t in self._transactions.values()
        )

    def _checkout_page(self, request: Request, sid: str) -> Response:
        with self.lock:
            session = self._sessions.get(sid)
        if session is None:
            return self._error_page(404, "Payment not found", "This payment page does not exist.")
        action = f"/checkout/sessions/{sid}/complete"
        if session.status != "open":
            return self._done_page(session.status == "paid", session.checkout)
        return html_response(_checkout_html(session.checkout, action))

    def _checkout_complete(self, request: Request, sid: str) -> Response:
        outcome = request.form().get("outcome", "")
        if outcome not in {"card", "decline", *WALLETS}:
            return self._error_page(400, "Unknown choice", "Choose Pay, a wallet or Decline.")
        with self.lock:
            session = self._sessions.get(sid)
            if session is None:
                return self._error_page(
                    404, "Payment not found", "This payment page does not exist."
                )
            if session.status != "open":
                return self._error_page(409, "Already completed", "This payment has finished.")
            if outcome != "decline" and self._invoice_paid(session.checkout.invoice_id):
                return self._error_page(409, "Already paid", "This invoice has already been paid.")
            if outcome in WALLETS and outcome not in session.checkout.wallets:
                return self._error_page(400, "Unknown choice", "That wallet is not offered.")
            transaction = self._record_payment(session.checkout, outcome)
            session.status = "declined" if outcome == "decline" else "paid"
            session.transaction_id = transaction.id
        self._send_callback(session.checkout, transaction, outcome)
        success = outcome != "decline"
        return redirect(session.return_url if success else session.failure_return_url)

    def _record_payment(self, checkout: Checkout, outcome: str) -> Transaction:
        """The transaction a hosted-page outcome creates (call with the lock held)."""
        if outcome == "decline":
            status = "DECLINED"
        else:
            status = {"SALE": "CHARGE", "VERIFICATION": "VERIFICATION"}.get(
                checkout.transaction_type, "AUTH"
            )
        transaction = Transaction(
            id=str(uuid.uuid4()),
            invoice_id=checkout.invoice_id,
            transaction_type=checkout.transaction_type,
            status=status,
            amount=checkout.amount,
            currency=checkout.currency,
            terminal_id=checkout.terminal_id,
            payment_method="card" if outcome in {"card", "decline"} else outcome,
            created=utcnow(),
            charged_amount=checkout.amount if status == "CHARGE" else Decimal(0),
        )
        self._transactions[transaction.id] = transaction
        return transaction

    def callback_payload(self, checkout: Checkout, transaction: Transaction) -> dict[str, Any]:
        """The signed JSON DNA posts to callbackUrl / failureCallbackUrl."""
        success = transaction.status != "DECLINED"
        error_code = 0 if success else DECLINE_ERROR_CODE
        payload = {
            "id": transaction.id,
            "invoiceId": transaction.invoice_id,
            "amount": transaction.amount,
            "currency": transaction.currency,
            "accountId": _account_id(checkout.customer_details),
            "message": "Successful payment" if success else "Declined by issuer (simulated)",
            "secure3D": transaction.payment_method == "card",
            "rrn": _digits(12),
            "errorCode": error_code,
            "success": success,
            "settled": transaction.status == "CHARGE",
            "paymentMethod": transaction.payment_method,
            "cardTokenId": _letters(32),
            "cardExpiryDate": "12/30",
            "cardSchemeName": CARD_SCHEME,
            "cardPanStarred": MASKED_PAN,
            "cardholderName": checkout.cardholder_name,
            "merchantCustomData": checkout.merchant_custom_data,
        }
        payload["signature"] = signing.dna_callback_signature(
            transaction_id=transaction.id,
            amount=transaction.amount,
            currency=transaction.currency,
            invoice_id=transaction.invoice_id,
            error_code=error_code,
            success=success,
            secret=self.config.client_secret,
        )
        return payload

    def _send_callback(self, checkout: Checkout, transaction: Transaction, outcome: str) -> None:
        url = checkout.failure_callback_url if outcome == "decline" else checkout.callback_url
        if not url:
            return
        payload = self.callback_payload(checkout, transaction)
        headers = {"Content-Type": "application/json", "User-Agent": "DNA-Payments-Simulator/1.0"}
        self._deliver("dna_callback", url, base.dump_json(payload), headers, payload)

    # -- deliveries ------------------------------------------------------------------

    def _deliver(
        self, kind: str, url: str, body: bytes, headers: dict[str, str], payload: Any, **extra
    ) -> dict[str, Any]:
        """Send once (outside the lock: the receiver may call us back) and log the outcome."""
        result = base.deliver(url, body, headers, timeout=self.config.delivery_timeout)
        with self.lock:
            number = len(self._deliveries) + 1
            record = {
                "number": number,
                "kind": kind,
                "url": url,
                "at": isoformat(utcnow()),
                "status_code": result.status_code,
                "error": result.error,
                "body": base.redact(payload),
                **extra,
            }
            self._deliveries.append(record)
            self._delivery_raw[number] = (url, body, headers)
        return record

    def _delivery_list(self, request: Request) -> Response:
        with self.lock:
            return json_response({"deliveries": list(self._deliveries)})

    def _redeliver(self, request: Request, number: str) -> Response:
        with self.lock:
            raw = self._delivery_raw.get(int(number))
            original = self._deliveries[int(number) - 1] if raw else None
        if raw is None or original is None:
            raise HttpError(404, "not_found", f"No delivery {number}.")
        url, body, headers = raw
        record = self._deliver(
            original["kind"], url, body, headers, json.loads(body), redelivery_of=int(number)
        )
        return json_response(record, 201)

    # -- pay by link -------------------------------------------------------------------

    def _link_create(self, request: Request) -> Response:
        self._require_scope(request, "pay_by_link", "webapi")
        data = request.json()
        settings = data.get("paymentSettings") or {}
        if not isinstance(settings, dict):
            raise HttpError(400, "validation_error", "paymentSettings must be an object.")
        customer_name = required_text(data, "customerName")
        terminal_id = required_text(data, "terminalId")
        expiration_text = required_text(data, "expirationDate", max_length=40)
        try:
            expiration = base.parse_iso8601(expiration_text)
        except ValueError as error:
            raise HttpError(400, "validation_error", "expirationDate must be ISO 8601.") from error
        if expiration <= utcnow():
            raise HttpError(400, "validation_error", "expirationDate must be in the future.")
        fields = {**data, "invoiceId": data.get("invoiceId") or f"PBL{uuid.uuid4().hex[:20]}"}
        checkout = self._checkout_from(
            fields, {**settings, "terminalId": terminal_id}, fallback_name=customer_name
        )
        link = PaymentLink(
            id=str(uuid.uuid4()),
            checkout=checkout,
            customer_name=customer_name,
            expiration=expiration,
            created=utcnow(),
        )
        with self.lock:
            self._links[link.id] = link
        return json_response(self._link_json(link), 201)

    def _expire_if_due(self, link: PaymentLink) -> None:
        if link.status in LINK_OPEN_STATUSES and link.expiration <= utcnow():
            link.status = "expired"

    def _link_json(self, link: PaymentLink) -> dict[str, Any]:
        self._expire_if_due(link)
        checkout = link.checkout
        return {
            "id": link.id,
            "amount": checkout.amount,
            "currency": checkout.currency,
            "invoiceId": checkout.invoice_id,
            "terminalId": checkout.terminal_id,
            "customerName": link.customer_name,
            "description": checkout.description,
            "transactionType": checkout.transaction_type,
            "merchantCustomData": checkout.merchant_custom_data,
            "createdDate": isoformat(link.created),
            "expirationDate": isoformat(link.expiration),
            "viewedDate": isoformat(link.viewed),
            "attemptedDate": isoformat(link.attempted),
            "paidDate": isoformat(link.paid),
            "cancelledDate": isoformat(link.cancelled),
            "status": link.status,
            "url": f"{self.base_url}/checkout/link/{link.id}/",
        }

    def _find_link(self, link_id: str) -> PaymentLink:
        link = self._links.get(link_id)
        if link is None:
            raise HttpError(404, "not_found", f"No payment link {link_id}.")
        return link

    def _link_get(self, request: Request, link_id: str) -> Response:
        self._require_scope(request, "pay_by_link", "webapi")
        with self.lock:
            return json_response(self._link_json(self._find_link(link_id)))

    def _link_list(self, request: Request) -> Response:
        self._require_scope(request, "pay_by_link", "webapi")
        wanted = {s for s in request.query.get("status", "").split(",") if s}
        if wanted - set(LINK_STATUSES):
            raise HttpError(400, "validation_error", f"status must be among {LINK_STATUSES}.")
        try:
            page = max(1, int(request.query.get("page", "1")))
            size = min(100, max(1, int(request.query.get("size", "20"))))
        except ValueError as error:
            raise HttpError(400, "validation_error", "page and size are integers.") from error
        with self.lock:
            items = [self._link_json(link) for link in self._links.values()]
        items = [i for i in items if not wanted or i["status"] in wanted]
        items.sort(key=lambda item: item["createdDate"], reverse=True)
        return json_response(
            {
                "data": items[(page - 1) * size : page * size],
                "totalCount": len(items),
                "page": page,
                "size": size,
            }
        )

    def _link_cancel(self, request: Request, link_id: str) -> Response:
        self._require_scope(request, "pay_by_link", "webapi")
        with self.lock:
            link = self._find_link(link_id)
            self._expire_if_due(link)
            if link.status not in LINK_OPEN_STATUSES:
                raise HttpError(
                    409,
                    "link_not_cancellable",
                    f"A {link.status} link cannot be cancelled.",
                    linkStatus=link.status,
                )
            link.status = "cancelled"
            link.cancelled = utcnow()
            return json_response(self._link_json(link))

    def _link_page(self, request: Request, link_id: str) -> Response:
        with self.lock:
            link = self._links.get(link_id)
            if link is None:
                return self._error_page(
                    404, "Payment link not found", "Check the link you were sent."
                )
            self._expire_if_due(link)
            if link.status == "paid":
                return self._done_page(True, link.checkout)
            if link.status not in LINK_OPEN_STATUSES:
                return self._error_page(
                    410, "This payment link is no longer available", f"The link is {link.status}."
                )
            if link.status == "active":
                link.status = "viewed"
                link.viewed = utcnow()
            checkout = link.checkout
        return html_response(_checkout_html(checkout, f"/checkout/link/{link_id}/complete"))

    def _link_complete(self, request: Request, link_id: str) -> Response:
        outcome = request.form().get("outcome", "")
        if outcome not in {"card", "decline", *WALLETS}:
            return self._error_page(400, "Unknown choice", "Choose Pay, a wallet or Decline.")
        with self.lock:
            link = self._links.get(link_id)
            if link is None:
                return self._error_page(
                    404, "Payment link not found", "Check the link you were sent."
                )
            self._expire_if_due(link)
            if link.status not in LINK_OPEN_STATUSES:
                return self._error_page(
                    410, "This payment link is no longer available", f"The link is {link.status}."
                )
            if outcome in WALLETS and outcome not in link.checkout.wallets:
                return self._error_page(400, "Unknown choice", "That wallet is not offered.")
            now = utcnow()
            link.attempted = now
            link.status = "attempted"
            transaction = self._record_payment(link.checkout, outcome)
            if outcome != "decline":
                link.status = "paid"
                link.paid = now
                link.transaction_id = transaction.id
        self._send_callback(link.checkout, transaction, outcome)
        return self._done_page(
            outcome != "decline", link.checkout, retry_url=f"/checkout/link/{link_id}/"
        )

    # -- transaction management ---------------------------------------------------------

    def _find_transaction(self, data: Mapping[str, Any]) -> Transaction:
        transaction_id = data.get("id")
        if not isinstance(transaction_id, str) or not transaction_id:
            raise HttpError(400, "validation_error", "id is required.")
        transaction = self._transactions.get(transaction_id)
        if transaction is None:
            raise HttpError(404, "not_found", f"No transaction {transaction_id}.")
        return transaction

    def _operation_json(
        self, transaction: Transaction, *, amount: Decimal, message: str, operation_id: str | None
    ) -> dict[str, Any]:
        return {
            "success": True,
            "id": operation_id or transaction.id,
            "parentId": transaction.id if operation_id else None,
            "invoiceId": transaction.invoice_id,
            "amount": amount,
            "currency": transaction.currency,
            "status": "REFUND" if operation_id else transaction.status,
            "message": message,
            "refundedAmount": transaction.refunded_amount,
            "remainingAmount": transaction.remaining_amount,
        }

    def _op_charge(self, request: Request) -> Response:
        self._require_scope(request, "webapi")
        data = request.json()
        with self.lock:
            transaction = self._find_transaction(data)
            if transaction.status != "AUTH":
                raise HttpError(
                    400, "invalid_state", f"Only AUTH can be charged; this is {transaction.status}."
                )
            amount = (
                transaction.amount if data.get("amount") is None else parse_amount(data["amount"])
            )
            if amount > transaction.amount:
                raise HttpError(
                    400, "amount_too_large", "The charge exceeds the authorised amount."
                )
            transaction.status = "CHARGE"
            transaction.charged_amount = amount
            body = self._operation_json(
                transaction, amount=amount, message="Charged", operation_id=None
            )
        return json_response(body)

    def _op_stored_card_charge(self, request: Request) -> Response:
        """A merchant-initiated charge of a card stored at DNA (card on file).

        DNA's public documentation does not describe this call, so our client
        reads its path from a setting (DNA_STORED_CARD_CHARGE_PATH). Here: body
        {invoiceId, amount, currency, terminalId, cardTokenId, transactionType};
        a cardTokenId containing "decline" is declined (400 `declined`), any
        other token is charged at once (a CHARGE transaction, refundable and
        settled like the others). One charge per invoiceId.
        """
        self._require_scope(request, "webapi")
        data = request.json()
        token = data.get("cardTokenId")
        if not isinstance(token, str) or not token:
            raise HttpError(400, "validation_error", "cardTokenId is required.")
        invoice_id = data.get("invoiceId")
        if not isinstance(invoice_id, str) or not invoice_id:
            raise HttpError(400, "validation_error", "invoiceId is required.")
        amount = parse_amount(data.get("amount"))
        with self.lock:
            if self._invoice_paid(invoice_id):
                raise HttpError(409, "already_paid", "This invoice has already been charged.")
            if "decline" in token:
                raise HttpError(400, "declined", "The stored card was declined (simulated).")
            transaction = Transaction(
                id=str(uuid.uuid4()),
                invoice_id=invoice_id,
                transaction_type="SALE",
                status="CHARGE",
                amount=amount,
                currency=str(data.get("currency") or "GBP"),
                terminal_id=str(data.get("terminalId") or ""),
                payment_method="card_on_file",
                created=utcnow(),
                charged_amount=amount,
            )
            self._transactions[transaction.id] = transaction
            body = self._operation_json(
                transaction, amount=amount, message="Charged", operation_id=None
            )
        return json_response(body)

    def _op_refund(self, request: Request) -> Response:
        self._require_scope(request, "webapi")
        data = request.json()
        reason = data.get("reason")
        with self.lock:
            transaction = self._find_transaction(data)
            if transaction.status != "CHARGE":
                raise HttpError(
                    400,
                    "invalid_state",
                    f"Only CHARGE can be refunded; this is {transaction.status}.",
                )
            remaining = transaction.remaining_amount
            if remaining <= 0:
                raise HttpError(400, "already_refunded", "The transaction is fully refunded.")
            amount = remaining if data.get("amount") is None else parse_amount(data["amount"])
            if amount > remaining:
                raise HttpError(
                    400,
                    "amount_too_large",
                    f"The refund exceeds what is left to refund ({signing.format_amount(remaining)}).",
                )
            refund = Refund(
                id=str(uuid.uuid4()),
                amount=amount,
                reason=reason if isinstance(reason, str) else None,
                created=utcnow(),
            )
            transaction.refunds.append(refund)
            body = self._operation_json(
                transaction, amount=amount, message="Refunded", operation_id=refund.id
            )
        return json_response(body)

    def _op_cancel(self, request: Request) -> Response:
        self._require_scope(request, "webapi")
        data = request.json()
        with self.lock:
            transaction = self._find_transaction(data)
            cancellable = transaction.status == "AUTH" or (
                transaction.status == "CHARGE"
                and transaction.settlement_batch_id is None
                and not transaction.refunds
            )
            if not cancellable:
                raise HttpError(
                    400,
                    "invalid_state",
                    "Only an authorisation or an unsettled, unrefunded charge can be cancelled.",
                )
            amount = transaction.charged_amount or transaction.amount
            transaction.status = "CANCEL"
            transaction.charged_amount = Decimal(0)
            body = self._operation_json(
                transaction, amount=amount, message="Cancelled", operation_id=None
            )
        return json_response(body)

    def _transaction_json(self, transaction: Transaction) -> list[dict[str, Any]]:
        rows = [
            {
                "id": transaction.id,
                "parentId": None,
                "invoiceId": transaction.invoice_id,
                "transactionType": transaction.transaction_type,
                "status": transaction.status,
                "amount": transaction.amount,
                "chargedAmount": transaction.charged_amount,
                "refundedAmount": transaction.refunded_amount,
                "currency": transaction.currency,
                "terminalId": transaction.terminal_id,
                "paymentMethod": transaction.payment_method,
                "createdDate": isoformat(transaction.created),
                "settlementBatchId": transaction.settlement_batch_id,
            }
        ]
        for refund in transaction.refunds:
            rows.append(
                {
                    "id": refund.id,
                    "parentId": transaction.id,
                    "invoiceId": transaction.invoice_id,
                    "transactionType": "REFUND",
                    "status": "REFUND",
                    "amount": refund.amount,
                    "chargedAmount": Decimal(0),
                    "refundedAmount": Decimal(0),
                    "currency": transaction.currency,
                    "terminalId": transaction.terminal_id,
                    "paymentMethod": transaction.payment_method,
                    "createdDate": isoformat(refund.created),
                    "settlementBatchId": refund.settlement_batch_id,
                }
            )
        return rows

    def _transaction_list(self, request: Request, invoice_id: str) -> Response:
        self._require_scope(request, "webapi")
        if request.query.get("field", "invoiceId") != "invoiceId":
            raise HttpError(400, "validation_error", "Only field=invoiceId is supported.")
        with self.lock:
            rows = [
                row
                for transaction in self._transactions.values()
                if transaction.invoice_id == invoice_id
                for row in self._transaction_json(transaction)
            ]
        return json_response({"data": rows, "totalCount": len(rows)})

    # -- axept Connect terminals -------------------------------------------------------

    def _axept_auth(self, request: Request) -> Response:
        data = request.json()
        for name in ("merchantId", "keyId", "key"):
            required_text(data, name)
        expected = self.config.terminal_api_key
        if expected is not None and not hmac.compare_digest(
            str(data["key"]).encode(), expected.encode()
        ):
            raise HttpError(401, "unauthorized", "merchantId, keyId or key is wrong.")
        expires = utcnow() + timedelta(seconds=TERMINAL_TOKEN_SECONDS)
        token = self._jwt(
            {"sub": data["merchantId"], "kid": data["keyId"], "exp": int(expires.timestamp())}
        )
        with self.lock:
            self._terminal_tokens[token] = expires
        return json_response({"token": token, "ExpiresAt": isoformat(expires)})

    def _jwt(self, claims: dict[str, Any]) -> str:
        """A JWT-shaped HS256 token: opaque to our client, which only sends it back."""

        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(base.dump_json(value)).decode().rstrip("=")

        head = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({**claims, 'jti': uuid.uuid4().hex})}"
        mac = hmac.new(self._signing_key, head.encode(), hashlib.sha256).digest()
        return f"{head}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _require_terminal_token(self, request: Request) -> None:
        token = request.bearer
        with self.lock:
            expires = self._terminal_tokens.get(token or "")
        if expires is None or expires <= utcnow():
            raise HttpError(401, "unauthorized", "A valid axept Bearer token is required.")

    def _axept_create(self, request: Request) -> Response:
        self._require_terminal_token(request)
        data = request.json()
        uti = required_text(data, "uti", max_length=36)
        try:
            uti = str(uuid.UUID(uti))
        except ValueError as error:
            raise HttpError(400, "validation_error", "uti must be a GUID.") from error
        webhook_url = optional_url(data.get("webHookUrl"), "webHookUrl")
        if webhook_url is None:
            raise HttpError(400, "validation_error", "webHookUrl is required.")
        tid = required_text(data, "tid", max_length=64)
        reference = data.get("reference")
        if not isinstance(reference, str) or not REFERENCE_RE.match(reference):
            raise HttpError(400, "validation_error", "reference must be 1-50 letters or digits.")
        try:
            expiration = base.parse_iso8601(required_text(data, "expirationDate", max_length=40))
        except ValueError as error:
            raise HttpError(400, "validation_error", "expirationDate must be ISO 8601.") from error
        transaction_type = str(data.get("transactionType") or "SALE").upper()
        txn = TerminalTransaction(
            uti=uti,
            tid=tid,
            webhook_url=webhook_url,
            amount=parse_amount(data.get("amount")),
            currency=parse_currency(data.get("currency")),
            reference=reference,
            transaction_type=transaction_type,
            expiration=expiration,
            created=utcnow(),
            request_fingerprint=_canonical_body(request),
        )
        with self.lock:
            existing = self._terminal_txns.get(uti)
            if existing is not None:
                if existing.request_fingerprint != txn.request_fingerprint:
                    raise HttpError(
                        409, "duplicate_uti", "This uti was used for another transaction."
                    )
                return json_response(self._terminal_json(existing), 202)
            busy = self._pending_uti(tid)
            if busy is not None:
                raise HttpError(409, "terminal_busy", f"Terminal {tid} is busy with {busy}.")
            self._terminal_txns[uti] = txn
            self._pending_by_tid[tid] = uti
            return json_response(self._terminal_json(txn), 202)

    def _pending_uti(self, tid: str) -> str | None:
        """The uti the terminal is showing, after timing out an expired one (lock held)."""
        uti = self._pending_by_tid.get(tid)
        if uti is None:
            return None
        txn = self._terminal_txns[uti]
        if txn.status == "pending" and txn.expiration <= utcnow():
            txn.status = "timed_out"
        if txn.status != "pending":
            del self._pending_by_tid[tid]
            return None
        return uti

    def _terminal_json(self, txn: TerminalTransaction) -> dict[str, Any]:
        return {
            "uti": txn.uti,
            "tid": txn.tid,
            "status": txn.status,
            "amount": txn.amount,
            "currency": txn.currency,
            "reference": txn.reference,
            "transactionType": txn.transaction_type,
            "expirationDate": isoformat(txn.expiration),
            "createdDate": isoformat(txn.created),
            "result": base.redact(txn.result) if txn.result else None,
        }

    def _axept_status(self, request: Request, uti: str) -> Response:
        self._require_terminal_token(request)
        with self.lock:
            txn = self._terminal_txns.get(uti)
            if txn is None:
                return json_response({"uti": uti, "status": "unknown"}, 404)
            self._pending_uti(txn.tid)
            return json_response(self._terminal_json(txn))

    def _terminal_action(self, request: Request, tid: str) -> Response:
        from_form = request.content_type == "application/x-www-form-urlencoded"
        data = request.form() if from_form else request.json()
        action = data.get("action")
        if action not in TERMINAL_ACTIONS:
            raise HttpError(400, "validation_error", f"action must be one of {TERMINAL_ACTIONS}.")
        with self.lock:
            uti = self._pending_uti(tid)
            if uti is None:
                if from_form:
                    return redirect(f"{self.base_url}/axept/terminals/{tid}?done=none")
                raise HttpError(409, "no_pending_transaction", f"Terminal {tid} shows nothing.")
            txn = self._terminal_txns[uti]
            del self._pending_by_tid[tid]
            payload = self._terminal_result(txn, action)
            if data.get("webhook") is False or (
                action == "timeout" and not self.config.terminal_timeout_webhook
            ):
                payload = None  # settled, but nothing reaches webHookUrl
        delivery = None
        if payload is not None:
            body = base.dump_json(payload)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "axept-Connect-Simulator/1.0",
                **signing.http_message_signature(
                    method="POST",
                    target_uri=txn.webhook_url,
                    body=body,
                    secret=self.config.terminal_webhook_secret,
                    keyid=self.config.terminal_webhook_key_id,
                    created=int(time.time()),
                ),
            }
            delivery = self._deliver("terminal_webhook", txn.webhook_url, body, headers, payload)
        if from_form:
            return redirect(f"{self.base_url}/axept/terminals/{tid}?done={txn.status}")
        with self.lock:
            result = self._terminal_json(txn)
        return json_response({**result, "delivery": delivery})

    def _terminal_result(self, txn: TerminalTransaction, action: str) -> dict[str, Any]:
        """Settle the terminal transaction's outcome and build its webhook body (lock held)."""
        txn.status = {
            "approve": "approved",
            "decline": "declined",
            "cancel": "cancelled",
            "timeout": "timed_out",
        }[action]
        transaction_id = None
        if action in {"approve", "decline"}:
            transaction = Transaction(
                id=str(uuid.uuid4()),
                invoice_id=txn.reference,
                transaction_type="SALE",
                status="CHARGE" if action == "approve" else "DECLINED",
                amount=txn.amount,
                currency=txn.currency,
                terminal_id=txn.tid,
                payment_method="card",
                created=utcnow(),
                charged_amount=txn.amount if action == "approve" else Decimal(0),
            )
            self._transactions[transaction.id] = transaction
            transaction_id = transaction.id
        card_presented = action in {"approve", "decline"}
        txn.result = {
            "uti": txn.uti,
            "tid": txn.tid,
            "status": txn.status,
            "transactionId": transaction_id,
            "amount": txn.amount,
            "currency": txn.currency,
            "reference": txn.reference,
            "authCode": _letters(6).upper() if action == "approve" else None,
            "rrn": _digits(12) if card_presented else None,
            "errorCode": {"approve": 0, "decline": DECLINE_ERROR_CODE}.get(action),
            "message": {
                "approve": "Approved",
                "decline": "Declined by issuer (simulated)",
                "cancel": "Cancelled on the terminal",
                "timeout": "Timed out waiting for a card",
            }[action],
            "paymentMethod": "card" if card_presented else None,
            "cardSchemeName": CARD_SCHEME if card_presented else None,
            "cardPanStarred": MASKED_PAN if card_presented else None,
            "timestamp": isoformat(utcnow()),
        }
        return txn.result

    def _terminal_page(self, request: Request, tid: str) -> Response:
        with self.lock:
            uti = self._pending_uti(tid)
            pending = self._terminal_txns[uti] if uti else None
            last = max(
                (t for t in self._terminal_txns.values() if t.tid == tid and t.status != "pending"),
                key=lambda t: t.created,
                default=None,
            )
        return html_response(_terminal_html(tid, pending, last, request.query.get("done")))

    # -- settlement -----------------------------------------------------------------------

    def _fee(self, amount: Decimal) -> Decimal:
        fee = amount * self.config.fee_percent / 100 + self.config.fee_fixed
        return fee.quantize(TWO_PLACES, rounding=ROUND_HALF_UP)

    def _chargeback(self, request: Request) -> Response:
        """Control: a cardholder disputes a charged transaction; the next batch carries it."""
        data = request.json()
        with self.lock:
            transaction = self._find_transaction({"id": data.get("transactionId")})
            if transaction.status != "CHARGE":
                raise HttpError(400, "invalid_state", "Only a charged transaction can be disputed.")
            amount = (
                transaction.charged_amount
                if data.get("amount") is None
                else parse_amount(data["amount"])
            )
            self._chargebacks.append({"transaction": transaction, "amount": amount, "batch": None})
        return json_response({"transactionId": transaction.id, "amount": amount}, 201)

    def _settle(self, request: Request) -> Response:
        batch_id = str(uuid.uuid4())
        items: list[dict[str, Any]] = []
        with self.lock:
            for chargeback in self._chargebacks:
                if chargeback["batch"] is None:
                    chargeback["batch"] = batch_id
                    transaction = chargeback["transaction"]
                    items.append(
                        {
                            "transactionId": f"cb-{transaction.id}",
                            "parentId": transaction.id,
                            "invoiceId": transaction.invoice_id,
                            "type": "chargeback",
                            "amount": chargeback["amount"],
                            "fee": Decimal(0),
                            "currency": transaction.currency,
                        }
                    )
            for transaction in self._transactions.values():
                if transaction.status == "CHARGE" and transaction.settlement_batch_id is None:
                    transaction.settlement_batch_id = batch_id
                    items.append(
                        {
                            "transactionId": transaction.id,
                            "parentId": None,
                            "invoiceId": transaction.invoice_id,
                            "type": "sale",
                            "amount": transaction.charged_amount,
                            "fee": self._fee(transaction.charged_amount),
                            "currency": transaction.currency,
                        }
                    )
                for refund in transaction.refunds:
                    if refund.settlement_batch_id is None:
                        refund.settlement_batch_id = batch_id
                        items.append(
                            {
                                "transactionId": refund.id,
                                "parentId": transaction.id,
                                "invoiceId": transaction.invoice_id,
                                "type": "refund",
                                "amount": refund.amount,
                                "fee": Decimal(0),
                                "currency": transaction.currency,
                            }
                        )
            sales = sum((i["amount"] for i in items if i["type"] == "sale"), Decimal(0))
            refunds = sum(
                (i["amount"] for i in items if i["type"] in ("refund", "chargeback")), Decimal(0)
            )
            fees = sum((i["fee"] for i in items), Decimal(0))

            def money(value: Decimal) -> str:
                return str(value.quantize(TWO_PLACES))

            batch = {
                "batch_id": batch_id,
                "settled_at": isoformat(utcnow()),
                "currency": items[0]["currency"] if items else "GBP",
                "items": [
                    {**i, "amount": money(i["amount"]), "fee": money(i["fee"])} for i in items
                ],
                "totals": {
                    "sales": money(sales),
                    "refunds": money(refunds),
                    "fees": money(fees),
                    "net": money(sales - refunds - fees),
                },
            }
            self._settlements.append(batch)
        return json_response(batch, 201)

    def _settlement_list(self, request: Request) -> Response:
        with self.lock:
            return json_response({"batches": list(self._settlements)})

    # -- pages ----------------------------------------------------------------------------

    def _error_page(self, status: int, title: str, detail: str) -> Response:
        body = f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(detail)}</p>"
        return html_response(_page(title, body), status)

    def _done_page(
        self, success: bool, checkout: Checkout, retry_url: str | None = None
    ) -> Response:
        amount = html.escape(money_text(checkout.amount, checkout.currency))
        if success:
            title = "Payment received"
            body = f'<h1>{title}</h1>\n<p role="status">Thank you: {amount} has been paid.</p>'
        else:
            title = "Payment declined"
            body = f'<h1>{title}</h1>\n<p role="status">The payment of {amount} was declined.</p>'
            if retry_url:
                body += f'\n<p><a href="{html.escape(retry_url)}">Try again</a></p>'
        return html_response(_page(title, body))

    def _index(self, request: Request) -> Response:
        with self.lock:
            tids = list(
                dict.fromkeys(
                    [*self.config.terminals, *(t.tid for t in self._terminal_txns.values())]
                )
            )
            terminals = [(tid, self._pending_uti(tid)) for tid in tids]
            sessions = sorted(self._sessions.values(), key=lambda s: s.created, reverse=True)[:20]
            links = sorted(self._links.values(), key=lambda link: link.created, reverse=True)[:20]
            for link in links:
                self._expire_if_due(link)
        return html_response(_index_html(terminals, sessions, links))


# -- HTML --------------------------------------------------------------------------------

PAGE_CSS = """
body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}
button{font:inherit;padding:.6rem 1.2rem;margin:.25rem .5rem .25rem 0;border-radius:.4rem;border:2px solid #1a1a1a;background:#fff;cursor:pointer}
button.primary{background:#0b5cad;border-color:#0b5cad;color:#fff}
button:focus-visible,a:focus-visible{outline:3px solid #b35c00;outline-offset:2px}
.note{background:#fff8e1;border-left:4px solid #b35c00;padding:.5rem 1rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}
fieldset{border:1px solid #ccc;border-radius:.4rem}
table{border-collapse:collapse}th,td{text-align:left;padding:.25rem .75rem;border-bottom:1px solid #ddd}
"""


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · DNA Payments simulator</title>
<style>{PAGE_CSS}</style>
</head>
<body>
<header><p class="note">DNA Payments simulator: no money moves and no card details are ever entered here.</p></header>
<main>
{body}
</main>
</body>
</html>
"""


def _checkout_html(checkout: Checkout, action: str) -> str:
    amount = html.escape(money_text(checkout.amount, checkout.currency))
    rows = [("Amount", amount), ("Reference", html.escape(checkout.invoice_id))]
    if checkout.description:
        rows.insert(1, ("For", html.escape(checkout.description)))
    details = "\n".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    wallet_buttons = "\n".join(
        f'<button type="submit" name="outcome" value="{name}">Pay with {label} (simulated)</button>'
        for name, label in WALLETS.items()
        if name in checkout.wallets
    )
    body = f"""<h1>Pay {amount}</h1>
<dl>
{details}
</dl>
<p id="simulated-card">Card entry is simulated: choose what the card holder does.</p>
<form method="post" action="{html.escape(action)}" aria-describedby="simulated-card">
<fieldset>
<legend>Simulated outcome</legend>
<button type="submit" class="primary" name="outcome" value="card">Pay {amount}</button>
{wallet_buttons}
<button type="submit" name="outcome" value="decline">Decline</button>
</fieldset>
</form>"""
    return _page(f"Pay {money_text(checkout.amount, checkout.currency)}", body)


def _terminal_html(
    tid: str,
    pending: TerminalTransaction | None,
    last: TerminalTransaction | None,
    done: str | None,
) -> str:
    safe_tid = html.escape(tid)
    parts = [f"<h1>Terminal {safe_tid}</h1>"]
    if done:
        parts.append(f'<p role="status">Last action: {html.escape(done)}.</p>')
    if pending is not None:
        amount = html.escape(money_text(pending.amount, pending.currency))
        parts.append(
            f"""<h2>Showing {amount}</h2>
<dl>
<dt>Amount</dt><dd>{amount}</dd>
<dt>Reference</dt><dd>{html.escape(pending.reference)}</dd>
<dt>UTI</dt><dd>{html.escape(pending.uti)}</dd>
<dt>Expires</dt><dd>{html.escape(isoformat(pending.expiration) or "")}</dd>
</dl>
<form method="post" action="/axept/terminals/{safe_tid}/action">
<fieldset>
<legend>What the patient does</legend>
<button type="submit" class="primary" name="action" value="approve">Approve (card tapped)</button>
<button type="submit" name="action" value="decline">Decline</button>
<button type="submit" name="action" value="cancel">Cancel on the terminal</button>
<button type="submit" name="action" value="timeout">Let it time out</button>
</fieldset>
</form>"""
        )
    else:
        parts.append("<p>Idle: no transaction is waiting.</p>")
    if last is not None:
        parts.append(
            f"<h2>Last transaction</h2>\n<p>{html.escape(last.reference)}: "
            f"{html.escape(money_text(last.amount, last.currency))}, {html.escape(last.status)}.</p>"
        )
    parts.append(
        f'<p><a href="/axept/terminals/{safe_tid}">Refresh</a> · <a href="/">All simulators</a></p>'
    )
    return _page(f"Terminal {tid}", "\n".join(parts))


def _index_html(
    terminals: list[tuple[str, str | None]],
    sessions: list[CheckoutSession],
    links: list[PaymentLink],
) -> str:
    terminal_items = (
        "\n".join(
            f'<li><a href="/axept/terminals/{html.escape(tid)}">{html.escape(tid)}</a>: '
            f"{'transaction waiting' if uti else 'idle'}</li>"
            for tid, uti in terminals
        )
        or "<li>None yet.</li>"
    )
    session_rows = "\n".join(
        f'<tr><td><a href="/checkout/sessions/{s.id}">{html.escape(s.checkout.invoice_id)}</a></td>'
        f"<td>{html.escape(money_text(s.checkout.amount, s.checkout.currency))}</td>"
        f"<td>{html.escape(s.status)}</td></tr>"
        for s in sessions
    )
    link_rows = "\n".join(
        f'<tr><td><a href="/checkout/link/{link.id}/">{html.escape(link.checkout.invoice_id)}</a></td>'
        f"<td>{html.escape(money_text(link.checkout.amount, link.checkout.currency))}</td>"
        f"<td>{html.escape(link.status)}</td></tr>"
        for link in links
    )

    def table(caption: str, rows: str) -> str:
        if not rows:
            return "<p>None yet.</p>"
        return (
            f"<table>\n<caption>{caption}</caption>\n"
            '<tr><th scope="col">Invoice</th><th scope="col">Amount</th><th scope="col">Status</th></tr>\n'
            f"{rows}\n</table>"
        )

    body = f"""<h1>DNA Payments simulator</h1>
<h2>Card terminals</h2>
<ul>
{terminal_items}
</ul>
<h2>Recent checkout sessions</h2>
{table("Checkout sessions, newest first", session_rows)}
<h2>Payment links</h2>
{table("Payment links, newest first", link_rows)}
<h2>Control</h2>
<ul>
<li><a href="/sim/requests">Received requests</a></li>
<li><a href="/sim/deliveries">Sent callbacks and webhooks</a></li>
<li><a href="/sim/settlements">Settlement batches</a></li>
</ul>"""
    return _page("Index", body)


PAYMENT_API_JS = """/* DNA Payments simulator: the two calls of DNA's payment-api.js that we use. */
(function () {
  "use strict";
  var base = __BASE__;
  function encode(data) {
    var bytes = new TextEncoder().encode(JSON.stringify(data));
    var text = "";
    bytes.forEach(function (b) { text += String.fromCharCode(b); });
    return btoa(text).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  }
  window.DNAPayments = {
    options: {},
    configure: function (options) { this.options = options || {}; },
    openPaymentPage: function (paymentData) {
      window.location.assign(base + "/checkout/?params=" + encodeURIComponent(encode(paymentData)));
    }
  };
})();
"""


def serve_in_thread(
    port: int = 0, *, config: DnaConfig | None = None, host: str = "127.0.0.1"
) -> tuple[str, Callable[[], None]]:
    """Run a DNA simulator on a thread (port 0 = a free one); returns (base_url, stop)."""
    app = DnaSimulator(config or DnaConfig.from_env())
    return base.serve_in_thread(app, host=host, port=port)
