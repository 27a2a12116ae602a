"""GoCardless simulator: sandbox-style scenario webhooks and a read-only API to look things up.

We only observe Direct Debit (§3.4), so there is nothing to create here: the
API simulator answers GETs and refuses every other method with 405.

Webhooks. `send_scenario()` (or the command line below) POSTs
`{"events": [...], "meta": {"webhook_id": "WB..."}}` with headers
`Webhook-Signature: <hex HMAC-SHA256 of the raw body, key = GOCARDLESS_WEBHOOK_SECRET>`,
`Origin: https://api.gocardless.com` and `Content-Type: application/json`.
Each event: id, created_at, action, resource_type, links, details, metadata
({}: the events are GoCardless-initiated). `details` always has origin, cause
and description; bank-originated events add scheme and reason_code; a failed
payment adds will_attempt_retry. Scenarios (events in one webhook, in order):

- payment_confirmed: payments.confirmed (links.payment)
- payment_paid_out: payments.paid_out (links.payment, links.payout) and
  payouts.paid (links.payout)
- payment_failed: payments.failed (bank, insufficient_funds, ARUDD-0)
- payment_charged_back: payments.charged_back (bank, authorisation_disputed, DDICA-1)
- mandate_cancelled: mandates.cancelled (bank, mandate_cancelled, ADDACS-1)
- mandate_active: mandates.active (gocardless, mandate_activated)
- mandate_failed: mandates.failed (bank, invalid_bank_details, AUDDIS-5)
- mandate_expired: mandates.expired (gocardless, mandate_expired)
- mandate_blocked: mandates.blocked (gocardless, mandate_blocked)

Fees, as GoCardless does it, are not in the events: GET the payout and its
items. A paid-out payment's payout has `deducted_fees` (minor units, VAT
included) and items `payment_paid_out` ("5000"), `gocardless_fee` ("-84", VAT
in `taxes`) and `app_fee` ("-25"): amounts are strings in minor units.

The API simulator (default port 8602; Bearer token, and the
`GoCardless-Version` header is required as on the real API; when
GOCARDLESS_ACCESS_TOKEN is set the token must equal it):
GET /payments/{id}, /mandates/{id}, /payouts/{id} → {"payments": {...}} etc.;
GET /payments, /mandates, /payouts (lists, filter by ?mandate= / ?payout=);
GET /payout_items?payout=PO... → {"payout_items": [...], "meta": {...}}.
Errors are GoCardless-shaped: {"error": {"type", "code", "message", "errors": [{"reason", "message"}], ...}}.
Control (not GoCardless's): POST /sim/resources {"payments": [...], "mandates": [...],
"payouts": [...], "payout_items": [...]} upserts what a scenario made, which
`send_scenario(api_url=...)` does before sending, so a handler that looks the
payment up finds it; plus /sim/requests, /sim/faults, /sim/reset (base.py).

Command line:

    python -m integrations.simulators.gocardless send payment_paid_out \\
        --url http://127.0.0.1:8000/webhooks/gocardless/ \\
        [--mandate-ref REF] [--mandate-id MD...] [--payment-id PM...] [--amount 5000] \\
        [--secret S] [--api-url http://127.0.0.1:8602 | --no-api] \\
        [--mandate-metadata KEY=VALUE ...] [--payment-metadata KEY=VALUE ...]
    python -m integrations.simulators.gocardless serve [--port 8602]

Metadata is what the subscription module set on the mandate / payment when it
created them; our handler needs the keys in docs/contracts.md ("GoCardless"),
e.g. `--mandate-metadata primoro_practice_id=<uuid> primoro_patient_id=<uuid>
subscription_module=care_plan --payment-metadata subscription_id=CP-1`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from integrations.simulators import base, signing
from integrations.simulators.base import (
    HttpError,
    Request,
    Response,
    SimulatorApp,
    dump_json,
    isoformat,
    json_response,
    utcnow,
)
from integrations.simulators.config import (
    SimulatorConfigError,
    env_int,
    env_str,
    optional_secret,
    required_secret,
)

DEFAULT_PORT = 8602
# Our app's receiver: PUBLIC_BASE_URL, else 127.0.0.1:$PORT (what `make run` serves).
DEFAULT_WEBHOOK_URL = (
    os.environ.get("PUBLIC_BASE_URL") or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
).rstrip("/") + "/webhooks/gocardless/"
WEBHOOK_ORIGIN = "https://api.gocardless.com"
GOCARDLESS_FEE_PERCENT = 1  # 1 % + 20p, capped at £4, plus 20 % VAT (their published Bacs price)
GOCARDLESS_FEE_FIXED = 20
GOCARDLESS_FEE_CAP = 400
VAT_PERCENT = 20
DEFAULT_APP_FEE = 25
DOCS = "https://developer.gocardless.com/api-reference"
RESOURCE_TYPES = ("payments", "mandates", "payouts")

SCENARIOS = (
    "payment_confirmed",
    "payment_paid_out",
    "payment_failed",
    "payment_charged_back",
    "mandate_cancelled",
    "mandate_active",
    "mandate_failed",
    "mandate_expired",
    "mandate_blocked",
)

_DETAILS: dict[str, dict[str, Any]] = {
    "payment_confirmed": {
        "origin": "gocardless",
        "cause": "payment_confirmed",
        "description": "Enough time has passed since the payment was submitted for the banks "
        "to return an error, so this payment is now confirmed.",
    },
    "payment_paid_out": {
        "origin": "gocardless",
        "cause": "payment_paid_out",
        "description": "The payment has been paid out by GoCardless.",
    },
    "payout_paid": {
        "origin": "gocardless",
        "cause": "payout_paid",
        "description": "GoCardless has transferred the payout to the creditor's bank account.",
    },
    "payment_failed": {
        "origin": "bank",
        "cause": "insufficient_funds",
        "scheme": "bacs",
        "reason_code": "ARUDD-0",
        "description": "The customer's account had insufficient funds to make this payment.",
        "will_attempt_retry": False,
    },
    "payment_charged_back": {
        "origin": "bank",
        "cause": "authorisation_disputed",
        "scheme": "bacs",
        "reason_code": "DDICA-1",
        "description": "The customer has disputed having authorised this payment.",
    },
    "mandate_cancelled": {
        "origin": "bank",
        "cause": "mandate_cancelled",
        "scheme": "bacs",
        "reason_code": "ADDACS-1",
        "description": "The mandate was cancelled at a bank branch.",
    },
    "mandate_failed": {
        "origin": "bank",
        "cause": "invalid_bank_details",
        "scheme": "bacs",
        "reason_code": "AUDDIS-5",
        "description": "The bank refused the mandate: the account details are not valid "
        "(simulated).",
    },
    "mandate_expired": {
        "origin": "gocardless",
        "cause": "mandate_expired",
        "scheme": "bacs",
        "description": "Nothing was collected on the mandate for a long time, so it expired "
        "(simulated).",
    },
    "mandate_blocked": {
        "origin": "gocardless",
        "cause": "mandate_blocked",
        "description": "The mandate was blocked: its bank account is on a block list (simulated).",
    },
    "mandate_active": {
        "origin": "gocardless",
        "cause": "mandate_activated",
        "description": "The time window after submission for the banks to refuse a mandate has "
        "ended without any errors being received, so this mandate is now active.",
    },
}


def new_id(prefix: str) -> str:
    """A GoCardless-style id: two-letter prefix and 12 upper-case letters and digits."""
    return prefix + "".join(
        secrets.choice(string.ascii_uppercase + string.digits) for _ in range(12)
    )


@dataclass
class Scenario:
    """What one scenario sends (events) and what the API should then answer (resources)."""

    name: str
    events: list[dict[str, Any]]
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _event(
    action: str, resource_type: str, links: dict[str, str], details: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "id": new_id("EV"),
        "created_at": isoformat(now),
        "action": action,
        "resource_type": resource_type,
        "links": links,
        "details": dict(details),
        "metadata": {},
    }


def gocardless_fee(amount: int) -> tuple[int, int]:
    """(fee including VAT, VAT) in minor units for a payment of amount minor units."""
    fee = min(
        (amount * GOCARDLESS_FEE_PERCENT + 50) // 100 + GOCARDLESS_FEE_FIXED, GOCARDLESS_FEE_CAP
    )
    vat = (fee * VAT_PERCENT + 50) // 100
    return fee + vat, vat


def build_scenario(
    name: str,
    *,
    payment_id: str | None = None,
    mandate_id: str | None = None,
    mandate_ref: str | None = None,
    subscription_id: str | None = None,
    amount: int = 5000,
    currency: str = "GBP",
    app_fee: int = DEFAULT_APP_FEE,
    now: datetime | None = None,
    mandate_metadata: Mapping[str, str] | None = None,
    payment_metadata: Mapping[str, str] | None = None,
) -> Scenario:
    """The events and resources of a scenario; ids not given are generated. Pure apart from ids.

    `mandate_metadata` / `payment_metadata` go on the API resources (as the
    subscription module would have set them when it created them), never on the
    events, which GoCardless initiates with empty metadata.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if amount <= 0:
        raise ValueError("amount is in minor units and must be positive")
    now = now or utcnow()
    mandate_id = mandate_id or new_id("MD")
    creditor_id = "CR" + "SIMULATOR000"
    mandate_status = {
        "mandate_cancelled": "cancelled",
        "mandate_failed": "failed",
        "mandate_expired": "expired",
        "mandate_blocked": "blocked",
    }.get(name, "active")
    mandate = {
        "id": mandate_id,
        "created_at": isoformat(now - timedelta(days=30)),
        "reference": mandate_ref or f"SIM-{new_id('')[:8]}",
        "status": mandate_status,
        "scheme": "bacs",
        "next_possible_charge_date": (now + timedelta(days=4)).date().isoformat(),
        "payments_require_approval": False,
        "metadata": dict(mandate_metadata or {}),
        "links": {
            "creditor": creditor_id,
            "customer": new_id("CU"),
            "customer_bank_account": new_id("BA"),
        },
    }
    if name.startswith("mandate_"):
        action = name.removeprefix("mandate_")
        event = _event(action, "mandates", {"mandate": mandate_id}, _DETAILS[name], now)
        return Scenario(name, [event], {"mandates": [mandate]})

    payment_id = payment_id or new_id("PM")
    status = {
        "payment_confirmed": "confirmed",
        "payment_paid_out": "paid_out",
        "payment_failed": "failed",
        "payment_charged_back": "charged_back",
    }[name]
    payment = {
        "id": payment_id,
        "created_at": isoformat(now - timedelta(days=5)),
        "charge_date": (now - timedelta(days=2)).date().isoformat(),
        "amount": amount,
        "amount_refunded": 0,
        "currency": currency,
        "description": "Dental plan",
        "reference": None,
        "status": status,
        "retry_if_possible": False,
        "metadata": dict(payment_metadata or {}),
        "links": {
            "mandate": mandate_id,
            "creditor": creditor_id,
            "subscription": subscription_id or new_id("SB"),
        },
    }
    resources: dict[str, list[dict[str, Any]]] = {"payments": [payment], "mandates": [mandate]}
    action = name.removeprefix("payment_")
    links = {"payment": payment_id}
    events = []
    if name == "payment_paid_out":
        payout_id = new_id("PO")
        payment["links"]["payout"] = payout_id
        links["payout"] = payout_id
        fee, vat = gocardless_fee(amount)
        item_links = {"payment": payment_id, "mandate": mandate_id}
        resources["payouts"] = [
            {
                "id": payout_id,
                "amount": amount - fee - app_fee,
                "arrival_date": (now + timedelta(days=1)).date().isoformat(),
                "created_at": isoformat(now),
                "currency": currency,
                "deducted_fees": fee + app_fee,
                "payout_type": "merchant",
                "reference": f"SIM-{payout_id[-8:]}",
                "status": "paid",
                "tax_currency": currency,
                "metadata": {},
                "links": {"creditor": creditor_id, "creditor_bank_account": new_id("BA")},
            }
        ]
        vat_line = {
            "amount": f"-{vat}",
            "currency": currency,
            "destination_amount": f"-{vat}",
            "destination_currency": currency,
            "exchange_rate": None,
            "tax_rate_id": "GB_VAT_1",
        }
        resources["payout_items"] = [
            {
                "payout": payout_id,
                "amount": str(amount),
                "type": "payment_paid_out",
                "links": item_links,
                "taxes": [],
            },
            {
                "payout": payout_id,
                "amount": f"-{fee}",
                "type": "gocardless_fee",
                "links": item_links,
                "taxes": [vat_line],
            },
            {
                "payout": payout_id,
                "amount": f"-{app_fee}",
                "type": "app_fee",
                "links": item_links,
                "taxes": [],
            },
        ]
        events.append(_event(action, "payments", links, _DETAILS[name], now))
        events.append(
            _event("paid", "payouts", {"payout": payout_id}, _DETAILS["payout_paid"], now)
        )
    else:
        events.append(_event(action, "payments", links, _DETAILS[name], now))
    return Scenario(name, events, resources)


def webhook_body(events: list[dict[str, Any]], *, webhook_id: str | None = None) -> bytes:
    """The raw body GoCardless posts; sign exactly these bytes."""
    return dump_json({"events": events, "meta": {"webhook_id": webhook_id or new_id("WB")}})


@dataclass(frozen=True)
class WebhookDelivery:
    status_code: int
    body: bytes
    headers: dict[str, str]
    response_text: str


def send_webhook(
    url: str,
    events: list[dict[str, Any]],
    *,
    secret: str,
    timeout: float = 10.0,
    webhook_id: str | None = None,
) -> WebhookDelivery:
    """POST events to url as GoCardless does, signed; transport errors raise httpx.HTTPError."""
    body = webhook_body(events, webhook_id=webhook_id)
    headers = {
        "Content-Type": "application/json",
        "Origin": WEBHOOK_ORIGIN,
        "User-Agent": "gocardless-webhook-service/1.1 (simulator)",
        "Webhook-Signature": signing.gocardless_signature(body, secret),
    }
    response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    return WebhookDelivery(response.status_code, body, headers, response.text)


def publish_resources(api_url: str, scenario: Scenario, *, timeout: float = 5.0) -> None:
    """Make the API simulator answer for what the scenario created (before the webhook goes)."""
    response = httpx.post(
        f"{api_url.rstrip('/')}/sim/resources",
        content=dump_json(scenario.resources),
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )
    response.raise_for_status()


def send_scenario(
    name: str,
    *,
    url: str,
    secret: str,
    api_url: str | None = None,
    timeout: float = 10.0,
    **scenario_options: Any,
) -> tuple[Scenario, WebhookDelivery]:
    """Build a scenario, publish its resources to the API simulator (if api_url), send its webhook."""
    scenario = build_scenario(name, **scenario_options)
    if api_url:
        publish_resources(api_url, scenario)
    return scenario, send_webhook(url, scenario.events, secret=secret, timeout=timeout)


# -- the read-only API -------------------------------------------------------------------


class GoCardlessSimulator(SimulatorApp):
    name = "gocardless"

    def __init__(self, *, access_token: str | None = None) -> None:
        super().__init__()
        self.access_token = access_token
        self.reset_state()
        for resource in RESOURCE_TYPES:
            self.route("GET", rf"/{resource}/(?P<resource_id>[A-Z0-9]+)", self._getter(resource))
            self.route("GET", rf"/{resource}/?", self._lister(resource))
        self.route("GET", r"/payout_items/?", self._payout_item_list)
        self.route("POST", r"/sim/resources", self._sim_resources)

    def reset_state(self) -> None:
        with self.lock:
            self._resources: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in RESOURCE_TYPES}
            self._payout_items: dict[str, list[dict[str, Any]]] = {}

    def error_response(self, error: HttpError) -> Response:
        return json_response(
            {
                "error": {
                    "message": error.message,
                    "documentation_url": f"{DOCS}#api-usage-errors",
                    "type": "invalid_api_usage",
                    "request_id": str(uuid.uuid4()),
                    "code": error.status,
                    "errors": [{"reason": error.code, "message": error.message}],
                }
            },
            error.status,
        )

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/sim/"):
            return super().handle(request)
        if request.method not in {"GET", "HEAD"}:
            response = self.error_response(
                HttpError(
                    405,
                    "method_not_allowed",
                    "This simulator only reads: GoCardless "
                    "collections are never initiated by Integrated Payments.",
                )
            )
            response.headers["Allow"] = "GET, HEAD"
            return response
        token = request.bearer
        if token is None or (self.access_token is not None and token != self.access_token):
            raise HttpError(
                401, "authentication_failed", "A valid Bearer access token is required."
            )
        if not request.header("GoCardless-Version"):
            raise HttpError(400, "missing_version_header", "Send the GoCardless-Version header.")
        response = super().handle(request)
        response.headers.update(
            {
                "ratelimit-limit": "1000",
                "ratelimit-remaining": "999",
                "ratelimit-reset": isoformat(utcnow()) or "",
            }
        )
        return response

    def _getter(self, resource: str) -> Callable[..., Response]:
        def get(request: Request, resource_id: str) -> Response:
            with self.lock:
                found = self._resources[resource].get(resource_id)
            if found is None:
                raise HttpError(404, "resource_not_found", f"No {resource[:-1]} {resource_id}.")
            return json_response({resource: found})

        return get

    def _lister(self, resource: str) -> Callable[..., Response]:
        def list_(request: Request) -> Response:
            filters = {
                k: v
                for k, v in request.query.items()
                if k in {"mandate", "payout", "subscription", "creditor"}
            }
            with self.lock:
                items = [
                    item
                    for item in self._resources[resource].values()
                    if all(item.get("links", {}).get(k) == v for k, v in filters.items())
                ]
            return json_response(
                {resource: items, "meta": {"cursors": {"before": None, "after": None}, "limit": 50}}
            )

        return list_

    def _payout_item_list(self, request: Request) -> Response:
        payout_id = request.query.get("payout")
        if not payout_id:
            raise HttpError(422, "validation_failed", "payout is required.")
        with self.lock:
            items = [
                {k: v for k, v in item.items() if k != "payout"}
                for item in self._payout_items.get(payout_id, [])
            ]
        return json_response(
            {
                "payout_items": items,
                "meta": {"cursors": {"before": None, "after": None}, "limit": 50},
            }
        )

    def _sim_resources(self, request: Request) -> Response:
        data = request.json()
        counts = {}
        with self.lock:
            for resource in RESOURCE_TYPES:
                for item in data.get(resource) or []:
                    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                        raise HttpError(400, "invalid_resource", f"Each of {resource} needs an id.")
                    self._resources[resource][item["id"]] = item
                counts[resource] = len(data.get(resource) or [])
            items = data.get("payout_items") or []
            for payout_id in {item.get("payout") for item in items}:
                self._payout_items[payout_id] = [i for i in items if i.get("payout") == payout_id]
            counts["payout_items"] = len(items)
        return json_response({"upserted": counts}, 201)


def serve_in_thread(
    port: int = 0, *, access_token: str | None = None, host: str = "127.0.0.1"
) -> tuple[str, Callable[[], None]]:
    """Run the GoCardless API simulator on a thread (port 0 = a free one); returns (base_url, stop)."""
    return base.serve_in_thread(
        GoCardlessSimulator(access_token=access_token), host=host, port=port
    )


# -- command line -----------------------------------------------------------------------


def default_api_url(environ: Mapping[str, str] | None = None) -> str:
    port = env_int("GOCARDLESS_SIM_PORT", DEFAULT_PORT, environ=environ)
    return env_str("GOCARDLESS_SIM_URL", f"http://127.0.0.1:{port}", environ=environ)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m integrations.simulators.gocardless")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", help="send one scenario's webhook")
    send.add_argument("scenario", choices=SCENARIOS)
    send.add_argument("--url", default=DEFAULT_WEBHOOK_URL, help="our webhook endpoint")
    send.add_argument("--mandate-ref", help="the mandate's reference (our PaymentMandateRef)")
    send.add_argument("--mandate-id", help="MD... (default: generated)")
    send.add_argument("--payment-id", help="PM... (default: generated)")
    send.add_argument("--subscription-id", help="SB... (default: generated)")
    send.add_argument("--amount", type=int, default=5000, help="minor units (default 5000)")
    send.add_argument("--currency", default="GBP")
    send.add_argument("--secret", help="default: GOCARDLESS_WEBHOOK_SECRET or the dev secrets file")
    send.add_argument("--api-url", default=None, help="API simulator to publish resources to")
    send.add_argument("--no-api", action="store_true", help="do not publish to the API simulator")
    for target in ("mandate", "payment"):
        send.add_argument(
            f"--{target}-metadata",
            nargs="*",
            default=[],
            metavar="KEY=VALUE",
            help=f"metadata the subscription module set on the {target} resource",
        )
    serve = commands.add_parser("serve", help="run only the read-only API simulator")
    serve.add_argument("--port", type=int, default=env_int("GOCARDLESS_SIM_PORT", DEFAULT_PORT))
    serve.add_argument("--host", default="127.0.0.1")
    return parser


def _pairs(values: list[str]) -> dict[str, str]:
    """KEY=VALUE arguments as a dict (argparse has already checked they are strings)."""
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"metadata must be KEY=VALUE, got {value!r}")
        pairs[key] = item
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from integrations.simulators.__main__ import run_until_signal

        app = GoCardlessSimulator(access_token=optional_secret("GOCARDLESS_ACCESS_TOKEN"))
        return run_until_signal([app], {app.name: args.port}, host=args.host)
    try:
        secret = args.secret or required_secret("GOCARDLESS_WEBHOOK_SECRET")
    except SimulatorConfigError as error:
        print(error, file=sys.stderr)
        return 2
    scenario = build_scenario(
        args.scenario,
        payment_id=args.payment_id,
        mandate_id=args.mandate_id,
        mandate_ref=args.mandate_ref,
        subscription_id=args.subscription_id,
        amount=args.amount,
        currency=args.currency,
        mandate_metadata=_pairs(args.mandate_metadata),
        payment_metadata=_pairs(args.payment_metadata),
    )
    if not args.no_api:
        api_url = args.api_url or default_api_url()
        try:
            publish_resources(api_url, scenario)
        except httpx.HTTPError as error:
            print(f"warning: could not publish resources to {api_url}: {error}", file=sys.stderr)
    try:
        delivery = send_webhook(args.url, scenario.events, secret=secret)
    except httpx.HTTPError as error:
        print(f"could not deliver to {args.url}: {error}", file=sys.stderr)
        return 1
    for event in scenario.events:
        print(f"{event['resource_type']}.{event['action']} {event['id']} links={event['links']}")
    print(f"POST {args.url} -> {delivery.status_code}")
    return 0 if 200 <= delivery.status_code < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
