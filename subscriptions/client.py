"""A read-only GoCardless API client: look up payments, mandates, payouts and payout items.

Integrated Payments never initiates, schedules or retries a Direct Debit
collection (§3.4, §13.2.16), so this client has no method that writes: every
public method is a GET, and the only HTTP verb it uses is `self._http.get`
(tests/subscriptions/test_client.py holds it to that). Responses become typed
dataclasses, so the rest of the code never touches GoCardless's JSON.

Conventions (PROVIDERS.md): Bearer token, `GoCardless-Version` header,
amounts in minor units (integers on resources, strings on payout items),
timeouts on every call, no retries inside: a transient failure raises
`GoCardlessUnavailable` and the webhook pipeline retries the event later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import structlog
from django.conf import settings

from primoro_payments.http import tls_context

log = structlog.get_logger("subscriptions.client")

API_VERSION = "2015-07-06"
MAX_PAGES = 50


class GoCardlessError(Exception):
    """GoCardless refused the request (a 4xx other than 404/429): asking again will not help."""


class GoCardlessNotFound(GoCardlessError):
    """No such resource at GoCardless."""


class GoCardlessUnavailable(Exception):
    """GoCardless could not answer now (timeout, connection error, 429, 5xx): try again later."""


class GoCardlessCredentialsRefused(GoCardlessUnavailable):
    """401/403: our access token is wrong or lacks access. Retried, since it is fixed by config."""


@dataclass(frozen=True)
class GcPayment:
    id: str
    status: str
    amount_minor: int
    currency: str
    charge_date: date | None
    mandate_id: str
    subscription_id: str
    payout_id: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GcMandate:
    id: str
    reference: str
    status: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GcPayout:
    id: str
    status: str
    amount_minor: int
    deducted_fees_minor: int
    currency: str
    arrival_date: date | None


@dataclass(frozen=True)
class GcPayoutItem:
    type: str
    amount_minor: int  # signed: fees are negative, credits positive
    tax_minor: int  # signed, the VAT part of amount_minor
    payment_id: str
    mandate_id: str


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def _minor(value: Any) -> int:
    """GoCardless minor units: an integer, or (on payout items) a string such as "-84"."""
    if isinstance(value, bool):
        raise GoCardlessError(f"Not an amount in minor units: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise GoCardlessError(f"Not an amount in minor units: {value!r}") from None


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


class GoCardlessClient:
    """Read-only access to one GoCardless account. Use as a context manager, or call close()."""

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {access_token}",
                "GoCardless-Version": API_VERSION,
                "Accept": "application/json",
                "User-Agent": "primoro-payments/1 (read-only)",
            },
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
            transport=transport,
            verify=tls_context(),
        )

    @classmethod
    def from_settings(cls, *, transport: httpx.BaseTransport | None = None) -> GoCardlessClient:
        return cls(
            base_url=settings.GOCARDLESS_API_URL,
            access_token=settings.GOCARDLESS_ACCESS_TOKEN,
            timeout=getattr(settings, "GOCARDLESS_HTTP_TIMEOUT_SECONDS", 10.0),
            connect_timeout=getattr(settings, "GOCARDLESS_HTTP_CONNECT_TIMEOUT_SECONDS", 3.0),
            transport=transport,
        )

    def __enter__(self) -> GoCardlessClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- reads ---------------------------------------------------------------------------------

    def get_payment(self, payment_id: str) -> GcPayment:
        data = self._resource("payments", payment_id)
        links = data.get("links") or {}
        return GcPayment(
            id=data["id"],
            status=data.get("status") or "",
            amount_minor=_minor(data.get("amount")),
            currency=data.get("currency") or "",
            charge_date=_date(data.get("charge_date")),
            mandate_id=links.get("mandate") or "",
            subscription_id=links.get("subscription") or "",
            payout_id=links.get("payout") or "",
            metadata=_metadata(data.get("metadata")),
        )

    def get_mandate(self, mandate_id: str) -> GcMandate:
        data = self._resource("mandates", mandate_id)
        return GcMandate(
            id=data["id"],
            reference=data.get("reference") or "",
            status=data.get("status") or "",
            metadata=_metadata(data.get("metadata")),
        )

    def get_payout(self, payout_id: str) -> GcPayout:
        data = self._resource("payouts", payout_id)
        return GcPayout(
            id=data["id"],
            status=data.get("status") or "",
            amount_minor=_minor(data.get("amount")),
            deducted_fees_minor=_minor(data.get("deducted_fees") or 0),
            currency=data.get("currency") or "",
            arrival_date=_date(data.get("arrival_date")),
        )

    def list_payout_items(self, payout_id: str) -> list[GcPayoutItem]:
        """Every item of a payout, following GoCardless's `after` cursor."""
        items: list[GcPayoutItem] = []
        params: dict[str, str] = {"payout": _path_id(payout_id), "limit": "500"}
        for _ in range(MAX_PAGES):
            data = self._get("/payout_items", params=params)
            for raw in data.get("payout_items") or []:
                links = raw.get("links") or {}
                items.append(
                    GcPayoutItem(
                        type=raw.get("type") or "",
                        amount_minor=_minor(raw.get("amount")),
                        tax_minor=sum(_minor(t.get("amount")) for t in raw.get("taxes") or []),
                        payment_id=links.get("payment") or "",
                        mandate_id=links.get("mandate") or "",
                    )
                )
            after = ((data.get("meta") or {}).get("cursors") or {}).get("after")
            if not after:
                return items
            params = {**params, "after": after}
        raise GoCardlessError(f"Payout {payout_id} has more than {MAX_PAGES} pages of items.")

    # --- transport -----------------------------------------------------------------------------

    def _resource(self, kind: str, resource_id: str) -> dict:
        """GET /<kind>/<id> and return the resource, checking the envelope GoCardless wraps it in."""
        data = self._get(f"/{kind}/{_path_id(resource_id)}").get(kind)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise GoCardlessError(f"Unexpected answer shape for {kind}/{resource_id}.")
        return data

    def _get(self, path: str, *, params: dict[str, str] | None = None) -> dict:
        """The one HTTP call this client makes: a GET. Maps failures to our two error kinds."""
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise GoCardlessUnavailable(f"GoCardless timed out on {path}: {exc}") from exc
        except httpx.TransportError as exc:
            raise GoCardlessUnavailable(f"GoCardless unreachable on {path}: {exc}") from exc
        if response.status_code == 404:
            raise GoCardlessNotFound(f"GoCardless has no {path}.")
        if response.status_code in (401, 403):
            log.error("gocardless_credentials_refused", status=response.status_code, path=path)
            raise GoCardlessCredentialsRefused(
                f"GoCardless refused our credentials ({response.status_code}) on {path}: "
                "check GOCARDLESS_ACCESS_TOKEN."
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise GoCardlessUnavailable(f"GoCardless answered {response.status_code} on {path}.")
        if response.status_code != 200:
            raise GoCardlessError(
                f"GoCardless answered {response.status_code} on {path}: {response.text[:300]}"
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise GoCardlessUnavailable(f"GoCardless sent a non-JSON answer on {path}.") from exc
        if not isinstance(data, dict):
            raise GoCardlessError(f"Unexpected answer shape on {path}.")
        return data


def _path_id(value: str) -> str:
    """GoCardless ids are letters and digits; anything else never reaches a URL path."""
    if not isinstance(value, str) or not value.isalnum() or len(value) > 32:
        raise GoCardlessNotFound(f"Not a GoCardless id: {value!r}")
    return value
