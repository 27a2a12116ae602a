"""The httpx client for DNA Payments: OAuth, hosted checkout, Pay by Link, transactions, axept.

Contracts: /work/shared/PROVIDERS.md and the simulator's docstring
(integrations/simulators/dna.py). Rules this module keeps:

- Every call has connect and read timeouts (DNA_HTTP_CONNECT_TIMEOUT_SECONDS,
  DNA_HTTP_TIMEOUT_SECONDS).
- Retries are bounded (DNA_HTTP_RETRIES) and happen only where they are safe:
  reads and token requests on any transport error or 5xx; a money-moving POST
  only when the connection was never made (the request cannot have arrived).
  Any other failure of a money-moving call raises `DnaOutcomeUnknown`: the
  caller must not guess, it leaves the operation pending for the janitor.
- Every money-moving POST carries an `Idempotency-Key`; the caller passes the
  key of its `ProviderOperation` row, so a later retry can never move money twice.
- OAuth (webapi, pay_by_link) and axept tokens are cached per process until
  shortly before they expire; a 401 with a cached token refreshes it once.
- JSON is read with `parse_float=Decimal` and amounts are written as JSON
  numbers in their shortest form (24, 12.5), never through float.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from django.conf import settings

from integrations.dna.types import (
    AccessToken,
    CheckoutRequest,
    HostedCheckout,
    OperationResult,
    PaymentLinkInfo,
    PaymentLinkPage,
    PaymentLinkRequest,
    TerminalSaleRequest,
    TerminalStatus,
    TerminalTransaction,
    Transaction,
)
from primoro_payments.http import tls_context

log = structlog.get_logger("integrations.dna.client")

# A cached token is renewed this long before DNA says it expires.
TOKEN_REFRESH_MARGIN = timedelta(seconds=60)
# 4xx answers that mean "not answered yet, ask again later" rather than "refused".
_TRANSIENT_4XX = frozenset({408, 425, 429})
_TRANSIENT_CODES = frozenset({"idempotency_request_in_progress", "idempotency_key_reused"})
_USER_AGENT = "Primoro-Payments/1.0 (+dna)"


# --- errors -----------------------------------------------------------------


class DnaError(Exception):
    """Anything that went wrong talking to DNA."""

    def __init__(self, message: str, *, status: int | None = None, code: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class DnaConfigurationError(DnaError):
    """A setting the client needs is missing."""


class DnaRefused(DnaError):
    """DNA answered and refused (a definite 4xx): the operation did not happen."""


class DnaOutcomeUnknown(DnaError):
    """No definite answer (timeout, dropped connection, 5xx, request still running).

    The operation may or may not have happened: ask the provider later, never guess.
    """


# --- settings -----------------------------------------------------------------


@dataclass(frozen=True)
class DnaSettings:
    oauth_url: str
    api_url: str
    pay_url: str
    axept_url: str
    client_id: str
    client_secret: str
    terminal_id: str
    terminal_merchant_id: str
    terminal_key_id: str
    terminal_api_key: str
    connect_timeout: float
    read_timeout: float
    retries: int
    checkout_mode: str
    moto_payment_data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_django(cls) -> DnaSettings:
        """Read at call time, so override_settings in tests and reloads take effect."""
        return cls(
            oauth_url=settings.DNA_OAUTH_URL.rstrip("/"),
            api_url=settings.DNA_API_URL.rstrip("/"),
            pay_url=settings.DNA_PAY_URL.rstrip("/"),
            axept_url=(settings.DNA_AXEPT_URL or "").rstrip("/"),
            client_id=settings.DNA_CLIENT_ID,
            client_secret=settings.DNA_CLIENT_SECRET,
            terminal_id=settings.DNA_TERMINAL_ID,
            terminal_merchant_id=settings.DNA_TERMINAL_MERCHANT_ID,
            terminal_key_id=settings.DNA_TERMINAL_KEY_ID,
            terminal_api_key=settings.DNA_TERMINAL_API_KEY,
            connect_timeout=settings.DNA_HTTP_CONNECT_TIMEOUT_SECONDS,
            read_timeout=settings.DNA_HTTP_TIMEOUT_SECONDS,
            retries=getattr(settings, "DNA_HTTP_RETRIES", 2),
            checkout_mode=getattr(settings, "DNA_CHECKOUT_MODE", "script"),
            moto_payment_data=getattr(settings, "DNA_MOTO_PAYMENT_DATA", {}),
        )

    @classmethod
    def for_lookups(cls) -> DnaSettings:
        """For look-ups made while holding up other work (the janitor, a webhook being handled).

        Each call bounded by DNA_LOOKUP_TIMEOUT_SECONDS and never retried: the caller asks
        again later (the janitor's next pass, the webhook's own retry with backoff).
        """
        configured = cls.from_django()
        bound = settings.DNA_LOOKUP_TIMEOUT_SECONDS
        return dataclasses.replace(
            configured,
            read_timeout=min(configured.read_timeout, bound),
            connect_timeout=min(configured.connect_timeout, bound),
            retries=0,
        )


# --- JSON in and out ------------------------------------------------------------


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested objects merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def format_amount(value: Decimal) -> str:
    """An amount in its shortest form, as DNA prints and signs it: 24, 12.5 (never 24.00)."""
    if not isinstance(value, Decimal | int) or isinstance(value, bool):
        raise TypeError("amounts are Decimal or int, never float")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    text = format(number.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def encode_json(value: Any) -> str:
    """JSON text with Decimals written as numbers in their shortest form (no float on the way)."""
    if isinstance(value, Decimal):
        return format_amount(value)
    if isinstance(value, Mapping):
        members = (f"{json.dumps(str(k))}:{encode_json(v)}" for k, v in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode_json(item) for item in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not sent to DNA; use Decimal")
    if isinstance(value, datetime):
        return json.dumps(iso(value))
    return json.dumps(value)


def decode_json(content: bytes) -> Any:
    return json.loads(content, parse_float=Decimal)


def to_amount(value: Any, *, name: str = "amount") -> Decimal:
    """A Decimal from a JSON number (already Decimal or int) or numeric string; never a float."""
    if value is None or isinstance(value, bool | float):
        raise DnaError(f"DNA sent an invalid {name}: {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise DnaError(f"DNA sent an invalid {name}: {value!r}") from None
    if not amount.is_finite():
        raise DnaError(f"DNA sent an invalid {name}: {value!r}")
    return amount


def optional_amount(value: Any, *, name: str = "amount") -> Decimal | None:
    return None if value is None else to_amount(value, name=name)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def text(value: Any) -> str:
    return "" if value is None else str(value)


# --- the token cache --------------------------------------------------------------

_tokens: dict[tuple[str, ...], AccessToken] = {}
_tokens_lock = threading.Lock()


def forget_tokens() -> None:
    """Drop every cached token (a credential rotation; tests starting a fresh simulator)."""
    with _tokens_lock:
        _tokens.clear()


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


# --- the client -------------------------------------------------------------------


class DnaClient:
    """One client per unit of work (`with DnaClient() as dna: ...`); tokens outlive it."""

    def __init__(
        self,
        config: DnaSettings | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.config = config or DnaSettings.from_django()
        self.clock = clock or (lambda: datetime.now(UTC))
        timeout = httpx.Timeout(
            self.config.read_timeout,
            connect=self.config.connect_timeout,
            pool=self.config.connect_timeout,
        )
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
            headers={"User-Agent": _USER_AGENT},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DnaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        safe_to_repeat: bool,
    ) -> httpx.Response:
        """One request with bounded retries where repeating cannot do anything twice."""
        all_headers = dict(headers or {})
        content = None
        if body is not None:
            content = encode_json(body).encode()
            all_headers["Content-Type"] = "application/json"
        attempts = 1 + max(0, self.config.retries)
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = self._http.request(
                    method, url, content=content, data=form, headers=all_headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                # The request never reached DNA: repeating it is always safe.
                if last:
                    raise DnaOutcomeUnknown(f"DNA unreachable: {type(error).__name__}") from error
            except httpx.TransportError as error:
                if last or not safe_to_repeat:
                    raise DnaOutcomeUnknown(
                        f"No answer from DNA ({type(error).__name__})"
                    ) from error
            else:
                if response.status_code < 500 or last or not safe_to_repeat:
                    return response
            time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, response: httpx.Response, what: str) -> Any:
        """The parsed JSON of a 2xx; a refusal or an unknown outcome otherwise."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                return decode_json(response.content)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DnaOutcomeUnknown(f"{what}: DNA answered {status} without JSON") from error
        code, message = self._error_of(response)
        log.warning("dna_error_answer", what=what, status=status, code=code)
        if status >= 500 or status in _TRANSIENT_4XX or code in _TRANSIENT_CODES:
            raise DnaOutcomeUnknown(f"{what}: {message}", status=status, code=code)
        raise DnaRefused(f"{what}: {message}", status=status, code=code)

    @staticmethod
    def _error_of(response: httpx.Response) -> tuple[str, str]:
        try:
            data = decode_json(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "", f"HTTP {response.status_code}"
        if not isinstance(data, dict):
            return "", f"HTTP {response.status_code}"
        code = text(data.get("code") or data.get("error"))
        message = text(data.get("message") or data.get("error_description") or code)
        return code, message or f"HTTP {response.status_code}"

    # -- OAuth ----------------------------------------------------------------------

    def _require(self, **values: str) -> None:
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise DnaConfigurationError(f"DNA is not configured: {', '.join(missing)} missing.")

    def _request_token(self, scope: str, **extra: str) -> AccessToken:
        self._require(
            DNA_OAUTH_URL=self.config.oauth_url,
            DNA_CLIENT_ID=self.config.client_id,
            DNA_CLIENT_SECRET=self.config.client_secret,
        )
        form = {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            **extra,
        }
        response = self._send(
            "POST", f"{self.config.oauth_url}/oauth2/token", form=form, safe_to_repeat=True
        )
        data = self._answer(response, "token")
        try:
            expires_in = int(data["expires_in"])
            access_token = str(data["access_token"])
        except (KeyError, TypeError, ValueError) as error:
            raise DnaOutcomeUnknown("token: DNA's answer has no usable token") from error
        return AccessToken(
            access_token=access_token,
            expires_in=expires_in,
            expires_at=self.clock() + timedelta(seconds=expires_in),
            scope=text(data.get("scope")) or scope,
            token_type=text(data.get("token_type")) or "Bearer",
        )

    def _cached_token(self, key: tuple[str, ...], fetch: Callable[[], AccessToken]) -> AccessToken:
        with _tokens_lock:
            token = _tokens.get(key)
        if token is not None and token.expires_at - TOKEN_REFRESH_MARGIN > self.clock():
            return token
        token = fetch()
        with _tokens_lock:
            _tokens[key] = token
        return token

    def _forget(self, key: tuple[str, ...]) -> None:
        with _tokens_lock:
            _tokens.pop(key, None)

    def _oauth_key(self, scope: str) -> tuple[str, ...]:
        c = self.config
        return ("oauth", c.oauth_url, c.client_id, _fingerprint(c.client_secret), scope)

    def access_token(self, scope: str) -> AccessToken:
        """A cached token for a non-payment scope (webapi, pay_by_link)."""
        return self._cached_token(self._oauth_key(scope), lambda: self._request_token(scope))

    def _bearer_call(
        self,
        scope: str,
        method: str,
        url: str,
        *,
        what: str,
        body: Any = None,
        idempotency_key: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """A call with a cached OAuth token; a 401 refreshes the token and tries once more."""
        headers = {"Accept": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if params:
            url = f"{url}?{urlencode(params)}"
        for refreshed in (False, True):
            token = self.access_token(scope)
            headers["Authorization"] = f"Bearer {token.access_token}"
            response = self._send(
                method, url, body=body, headers=headers, safe_to_repeat=method == "GET"
            )
            if response.status_code == 401 and not refreshed:
                self._forget(self._oauth_key(scope))  # a 401 is never processed: safe to repeat
                continue
            return self._answer(response, what)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- hosted checkout --------------------------------------------------------------

    def checkout_token(
        self, *, invoice_id: str, amount: Decimal, currency: str, terminal_id: str, embedded: bool
    ) -> AccessToken:
        """A payment token bound to one invoice, amount, currency and terminal (not cached)."""
        integration = "integration_embedded" if embedded else "integration_hosted"
        return self._request_token(
            f"payment {integration}",
            invoiceId=invoice_id,
            amount=format_amount(amount),
            currency=currency,
            terminal=terminal_id,
        )

    def hosted_checkout(self, request: CheckoutRequest) -> HostedCheckout:
        """Get the bound token and build DNA's paymentData for `openPaymentPage`."""
        token = self.checkout_token(
            invoice_id=request.invoice_id,
            amount=request.amount,
            currency=request.currency,
            terminal_id=request.terminal_id,
            embedded=request.embedded,
        )
        custom = {"invoice": request.invoice_id}
        if request.moto:
            # MOTO marker (card not present, taken by phone): DNA publishes no field of its
            # own for hosted MOTO, so it travels in merchantCustomData and is echoed back.
            custom["channel"] = "moto"
        payment_data: dict[str, Any] = {
            "invoiceId": request.invoice_id,
            "description": request.description,
            "amount": request.amount,
            "currency": request.currency,
            "language": request.language,
            "transactionType": request.transaction_type,
            "paymentSettings": {
                "terminalId": request.terminal_id,
                "returnUrl": request.return_url,
                "failureReturnUrl": request.failure_return_url,
                "callbackUrl": request.callback_url,
                "failureCallbackUrl": request.failure_callback_url,
            },
            "merchantCustomData": json.dumps(custom, separators=(",", ":"), sort_keys=True),
            "auth": token.as_auth(),
        }
        if request.moto:
            payment_data = merged(payment_data, self.config.moto_payment_data)
        if request.wallets:
            payment_data["paymentMethods"] = list(request.wallets)
        redirect_url = None
        if self.config.checkout_mode == "redirect":
            redirect_url = self.checkout_redirect_url(payment_data)
        return HostedCheckout(
            payment_data=payment_data,
            script_url=f"{self.config.pay_url}/checkout/payment-api.js",
            redirect_url=redirect_url,
            expires_at=token.expires_at,
        )

    def checkout_redirect_url(self, payment_data: Mapping[str, Any]) -> str:
        """The page DNA's script would open, in the simulator's encoding (base64url JSON).

        Only for DNA_CHECKOUT_MODE = "redirect" against the simulator: the real page
        expects an encoding only DNA's own script produces.
        """
        raw = encode_json(payment_data).encode()
        encoded = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        return f"{self.config.pay_url}/checkout/?{urlencode({'params': encoded})}"

    # -- Pay by Link ----------------------------------------------------------------------

    def create_payment_link(
        self, request: PaymentLinkRequest, *, idempotency_key: str
    ) -> PaymentLinkInfo:
        body: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency,
            "terminalId": request.terminal_id,
            "expirationDate": iso(request.expires_at),
            "customerName": request.customer_name,
            "transactionType": request.transaction_type,
        }
        if request.invoice_id:
            body["invoiceId"] = request.invoice_id
        if request.description:
            body["description"] = request.description
        if request.merchant_custom_data:
            body["merchantCustomData"] = request.merchant_custom_data
        callbacks = {
            k: v
            for k, v in (
                ("callbackUrl", request.callback_url),
                ("failureCallbackUrl", request.failure_callback_url),
            )
            if v
        }
        if callbacks:
            body["paymentSettings"] = callbacks
        data = self._bearer_call(
            "pay_by_link",
            "POST",
            f"{self.config.api_url}/v1/payment-links",
            what="payment link",
            body=body,
            idempotency_key=idempotency_key,
        )
        return _payment_link(data)

    def get_payment_link(self, link_id: str) -> PaymentLinkInfo:
        data = self._bearer_call(
            "pay_by_link",
            "GET",
            f"{self.config.api_url}/v1/payment-links/{link_id}/",
            what="payment link",
        )
        return _payment_link(data)

    def list_payment_links(
        self, *, statuses: tuple[str, ...] = (), page: int = 1, size: int = 20
    ) -> PaymentLinkPage:
        params = {"page": str(page), "size": str(size)}
        if statuses:
            params["status"] = ",".join(statuses)
        data = self._bearer_call(
            "pay_by_link",
            "GET",
            f"{self.config.api_url}/v1/payment-links",
            what="payment links",
            params=params,
        )
        return PaymentLinkPage(
            links=[_payment_link(item) for item in data.get("data") or []],
            total=int(data.get("totalCount") or 0),
            page=int(data.get("page") or page),
            size=int(data.get("size") or size),
        )

    def cancel_payment_link(self, link_id: str, *, idempotency_key: str) -> PaymentLinkInfo:
        data = self._bearer_call(
            "pay_by_link",
            "POST",
            f"{self.config.api_url}/v1/payment-links/{link_id}/cancel",
            what="payment link cancel",
            body={},
            idempotency_key=idempotency_key,
        )
        return _payment_link(data)

    # -- transaction management ----------------------------------------------------------

    def _operation(self, path: str, body: dict, idempotency_key: str, what: str) -> OperationResult:
        if not idempotency_key:
            raise ValueError("money-moving calls need an idempotency key")
        data = self._bearer_call(
            "webapi",
            "POST",
            f"{self.config.api_url}/transaction/operation/{path}",
            what=what,
            body=body,
            idempotency_key=idempotency_key,
        )
        if data.get("success") is False:
            raise DnaRefused(f"{what}: {text(data.get('message'))}", code="unsuccessful")
        return OperationResult(
            id=text(data.get("id")),
            parent_id=data.get("parentId") or None,
            invoice_id=text(data.get("invoiceId")),
            amount=to_amount(data.get("amount")),
            currency=text(data.get("currency")),
            status=text(data.get("status")),
            message=text(data.get("message")),
            refunded_amount=optional_amount(data.get("refundedAmount")) or Decimal(0),
            remaining_amount=optional_amount(data.get("remainingAmount")) or Decimal(0),
        )

    def charge(
        self, *, transaction_id: str, amount: Decimal | None, idempotency_key: str
    ) -> OperationResult:
        """Capture an authorisation (all of it when amount is None)."""
        body: dict[str, Any] = {"id": transaction_id}
        if amount is not None:
            body["amount"] = amount
        return self._operation("charge", body, idempotency_key, "charge")

    def charge_stored_card(
        self,
        *,
        invoice_id: str,
        amount: Decimal,
        currency: str,
        terminal_id: str,
        card_token: str,
        idempotency_key: str,
    ) -> OperationResult:
        """A merchant-initiated charge of a card stored at DNA (card on file).

        PROVIDERS.md has no published contract for this call: the path is the
        setting DNA_STORED_CARD_CHARGE_PATH and the body follows the checkout's
        field names plus `cardTokenId` (the payment profile's token).
        """
        if not idempotency_key:
            raise ValueError("money-moving calls need an idempotency key")
        path = getattr(
            settings, "DNA_STORED_CARD_CHARGE_PATH", "/transaction/operation/stored-card-charge"
        )
        data = self._bearer_call(
            "webapi",
            "POST",
            f"{self.config.api_url}{path}",
            what="stored card charge",
            body={
                "invoiceId": invoice_id,
                "amount": amount,
                "currency": currency,
                "terminalId": terminal_id,
                "cardTokenId": card_token,
                "transactionType": "SALE",
            },
            idempotency_key=idempotency_key,
        )
        if data.get("success") is False:
            raise DnaRefused(
                f"stored card charge: {text(data.get('message'))}", code="unsuccessful"
            )
        return OperationResult(
            id=text(data.get("id")),
            parent_id=None,
            invoice_id=text(data.get("invoiceId")),
            amount=to_amount(data.get("amount")),
            currency=text(data.get("currency")),
            status=text(data.get("status")),
            message=text(data.get("message")),
            refunded_amount=Decimal(0),
            remaining_amount=to_amount(data.get("amount")),
        )

    def refund(
        self, *, transaction_id: str, amount: Decimal | None, reason: str, idempotency_key: str
    ) -> OperationResult:
        """Refund a charge, all that is left when amount is None; the answer's id is the refund's."""
        body: dict[str, Any] = {"id": transaction_id}
        if amount is not None:
            body["amount"] = amount
        if reason:
            body["reason"] = reason
        return self._operation("refund", body, idempotency_key, "refund")

    def cancel(self, *, transaction_id: str, idempotency_key: str) -> OperationResult:
        """Reverse an authorisation or an unsettled charge."""
        return self._operation("cancel", {"id": transaction_id}, idempotency_key, "cancel")

    def transactions(self, invoice_id: str) -> list[Transaction]:
        """Every transaction (and refund) DNA holds for one invoiceId."""
        data = self._bearer_call(
            "webapi",
            "GET",
            f"{self.config.api_url}/v2/transactions/{invoice_id}/list",
            what="transactions",
            params={"field": "invoiceId"},
        )
        return [_transaction(item) for item in data.get("data") or []]

    # -- axept Connect terminals ------------------------------------------------------------

    def _axept_key(self) -> tuple[str, ...]:
        c = self.config
        return (
            "axept",
            c.axept_url,
            c.terminal_merchant_id,
            c.terminal_key_id,
            _fingerprint(c.terminal_api_key),
        )

    def _axept_token(self) -> AccessToken:
        def fetch() -> AccessToken:
            self._require(
                DNA_AXEPT_URL=self.config.axept_url,
                DNA_TERMINAL_MERCHANT_ID=self.config.terminal_merchant_id,
                DNA_TERMINAL_KEY_ID=self.config.terminal_key_id,
                DNA_TERMINAL_API_KEY=self.config.terminal_api_key,
            )
            response = self._send(
                "POST",
                f"{self.config.axept_url}/auth",
                body={
                    "merchantId": self.config.terminal_merchant_id,
                    "keyId": self.config.terminal_key_id,
                    "key": self.config.terminal_api_key,
                },
                safe_to_repeat=True,
            )
            data = self._answer(response, "axept auth")
            expires_at = parse_time(data.get("ExpiresAt"))
            if not data.get("token") or expires_at is None:
                raise DnaOutcomeUnknown("axept auth: no usable token")
            seconds = int((expires_at - self.clock()).total_seconds())
            return AccessToken(
                access_token=str(data["token"]),
                expires_at=expires_at,
                expires_in=seconds,
                scope="axept",
            )

        return self._cached_token(self._axept_key(), fetch)

    def _axept_call(
        self, method: str, path: str, *, what: str, body: Any = None, idempotency_key: str = ""
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        for refreshed in (False, True):
            headers["Authorization"] = f"Bearer {self._axept_token().access_token}"
            response = self._send(
                method,
                f"{self.config.axept_url}{path}",
                body=body,
                headers=headers,
                safe_to_repeat=method == "GET",
            )
            if response.status_code == 401 and not refreshed:
                self._forget(self._axept_key())
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def terminal_sale(
        self, request: TerminalSaleRequest, *, idempotency_key: str
    ) -> TerminalTransaction:
        """Show the amount on the terminal; the outcome arrives later by webhook."""
        if not idempotency_key:
            raise ValueError("money-moving calls need an idempotency key")
        body = {
            "uti": request.uti,
            "webHookUrl": request.webhook_url,
            "tid": request.tid,
            "amount": request.amount,
            "currency": request.currency,
            "expirationDate": iso(request.expires_at),
            "reference": request.reference,
            "transactionType": request.transaction_type,
        }
        response = self._axept_call(
            "POST", "/transaction", what="terminal sale", body=body, idempotency_key=idempotency_key
        )
        return terminal_transaction(self._answer(response, "terminal sale"))

    def terminal_status(self, uti: str) -> TerminalTransaction:
        """Where the terminal transaction is; UNKNOWN when DNA has never heard of the uti."""
        response = self._axept_call("GET", f"/transaction/{uti}", what="terminal status")
        if response.status_code == 404:
            return TerminalTransaction(uti=uti, status=TerminalStatus.UNKNOWN)
        return terminal_transaction(self._answer(response, "terminal status"))


# --- JSON → dataclasses -------------------------------------------------------------


def _payment_link(data: Mapping[str, Any]) -> PaymentLinkInfo:
    return PaymentLinkInfo(
        id=text(data.get("id")),
        status=text(data.get("status")),
        amount=to_amount(data.get("amount")),
        currency=text(data.get("currency")),
        invoice_id=text(data.get("invoiceId")),
        terminal_id=text(data.get("terminalId")),
        description=text(data.get("description")),
        url=text(data.get("url")),
        created_at=parse_time(data.get("createdDate")),
        expires_at=parse_time(data.get("expirationDate")),
        paid_at=parse_time(data.get("paidDate")),
        cancelled_at=parse_time(data.get("cancelledDate")),
    )


def _transaction(data: Mapping[str, Any]) -> Transaction:
    return Transaction(
        id=text(data.get("id")),
        parent_id=data.get("parentId") or None,
        invoice_id=text(data.get("invoiceId")),
        transaction_type=text(data.get("transactionType")),
        status=text(data.get("status")),
        amount=to_amount(data.get("amount")),
        charged_amount=optional_amount(data.get("chargedAmount")) or Decimal(0),
        refunded_amount=optional_amount(data.get("refundedAmount")) or Decimal(0),
        currency=text(data.get("currency")),
        terminal_id=text(data.get("terminalId")),
        payment_method=text(data.get("paymentMethod")),
        created_at=parse_time(data.get("createdDate")),
        settlement_batch_id=data.get("settlementBatchId") or None,
    )


def terminal_transaction(data: Mapping[str, Any]) -> TerminalTransaction:
    """A terminal transaction from a status answer or a terminal webhook body."""
    result = data.get("result") if isinstance(data.get("result"), dict) else {}
    try:
        status = TerminalStatus(text(data.get("status")))
    except ValueError:
        status = TerminalStatus.UNKNOWN
    merged = {**result, **{k: v for k, v in data.items() if v is not None}}
    return TerminalTransaction(
        uti=text(merged.get("uti")),
        status=status,
        tid=text(merged.get("tid")),
        amount=optional_amount(merged.get("amount")),
        currency=text(merged.get("currency")),
        reference=text(merged.get("reference")),
        transaction_id=text(result.get("transactionId") or data.get("transactionId")) or None,
        message=text(merged.get("message")),
        error_code=text(merged.get("errorCode")),
        auth_code=text(merged.get("authCode")),
        payment_method=text(merged.get("paymentMethod")),
        card_scheme=text(merged.get("cardSchemeName")),
    )
