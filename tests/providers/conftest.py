"""DNA Payments end to end: the simulator on an ephemeral port, our settings pointed at it.

Everything external is reached over real HTTP: the simulator runs in this
process (serve_in_thread), and where DNA must call us back the Django app runs
in pytest-django's `live_server` with PUBLIC_BASE_URL set to it. Tests that post
DNA's webhooks themselves use the Django test client with bodies signed the way
the simulator signs them (integrations/simulators/signing.py).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser

import httpx
import pytest

from integrations.dna.client import forget_tokens
from integrations.simulators import dna as dna_sim
from integrations.simulators import signing
from payments import services
from payments.models import PaymentMethod, TargetType
from practices.roles import Role
from primoro_payments.pan import contains_card_number
from tests.factories import make_staff

CLIENT_ID = "primoro-provider-tests"
CLIENT_SECRET = "provider-tests-client-secret-0123456789"
TERMINAL_SECRET = "provider-tests-terminal-webhook-secret"
TERMINAL_KEY_ID = "provider-tests-terminal-key"
TERMINAL_API_KEY = "provider-tests-axept-key"
MERCHANT_ID = "primoro-merchant"


@dataclass
class Sim:
    """The running simulator and its control plane."""

    url: str
    http: httpx.Client

    def requests(self, prefix: str = "") -> list[dict]:
        answer = self.http.get(f"{self.url}/sim/requests", params={"path_prefix": prefix})
        return answer.json()["requests"]

    def count(self, prefix: str, method: str = "POST") -> int:
        return sum(1 for r in self.requests(prefix) if r["method"] == method)

    def fault(self, path_prefix: str, mode: str, *, count: int = 1, **extra) -> None:
        body = {"path_prefix": path_prefix, "mode": mode, "count": count, **extra}
        assert self.http.post(f"{self.url}/sim/faults", json=body).status_code == 201

    def deliveries(self) -> list[dict]:
        return self.http.get(f"{self.url}/sim/deliveries").json()["deliveries"]

    def redeliver(self, number: int) -> dict:
        answer = self.http.post(f"{self.url}/sim/deliveries/{number}/redeliver")
        assert answer.status_code == 201, answer.text
        return answer.json()

    def terminal(self, tid: str, action: str, *, webhook: bool = True) -> dict:
        """Play the patient at the terminal; webhook=False: the result never reaches us."""
        body = {"action": action} if webhook else {"action": action, "webhook": False}
        answer = self.http.post(f"{self.url}/axept/terminals/{tid}/action", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def settle(self) -> dict:
        answer = self.http.post(f"{self.url}/sim/settlements")
        assert answer.status_code == 201
        return answer.json()

    def transactions(self, invoice_id: str) -> list[dict]:
        token = self.http.post(
            f"{self.url}/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "scope": "webapi",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ).json()["access_token"]
        answer = self.http.get(
            f"{self.url}/v2/transactions/{invoice_id}/list",
            headers={"Authorization": f"Bearer {token}"},
        )
        return json.loads(answer.content, parse_float=Decimal)["data"]


@pytest.fixture
def http():
    with httpx.Client(timeout=15) as client:
        yield client


@pytest.fixture
def dna(settings, http):
    """A DNA simulator with our test credentials, and every DNA setting pointed at it."""
    config = dna_sim.DnaConfig(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        terminal_webhook_secret=TERMINAL_SECRET,
        terminal_webhook_key_id=TERMINAL_KEY_ID,
        terminal_api_key=TERMINAL_API_KEY,
        terminals=("TIDPROV01",),
        delivery_timeout=10.0,
    )
    base_url, stop = dna_sim.serve_in_thread(0, config=config)
    settings.DNA_OAUTH_URL = base_url
    settings.DNA_API_URL = base_url
    settings.DNA_PAY_URL = base_url
    settings.DNA_AXEPT_URL = f"{base_url}/axept"
    settings.DNA_CLIENT_ID = CLIENT_ID
    settings.DNA_CLIENT_SECRET = CLIENT_SECRET
    settings.DNA_TERMINAL_MERCHANT_ID = MERCHANT_ID
    settings.DNA_TERMINAL_KEY_ID = "primoro-key-1"
    settings.DNA_TERMINAL_API_KEY = TERMINAL_API_KEY
    settings.DNA_TERMINAL_WEBHOOK_SECRET = TERMINAL_SECRET
    settings.DNA_TERMINAL_WEBHOOK_KEY_ID = TERMINAL_KEY_ID
    settings.DNA_HTTP_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.DNA_HTTP_TIMEOUT_SECONDS = 1.5
    settings.DNA_HTTP_RETRIES = 1
    settings.DNA_CHECKOUT_MODE = "redirect"
    settings.DNA_OPERATIONS_ON_COMMIT = True
    settings.DNA_JANITOR_STALE_SECONDS = 0
    settings.DNA_OPERATION_LEASE_SECONDS = 0
    settings.DNA_ONLINE_TRANSACTION_TYPE = "SALE"
    settings.PUBLIC_BASE_URL = "http://testserver"
    # Roomy rate limits: every browser here is 127.0.0.1, and the counters outlast a test.
    settings.API_THROTTLE_RATES = dict.fromkeys(settings.API_THROTTLE_RATES, "100000/min")
    forget_tokens()
    yield Sim(url=base_url, http=http)
    stop()
    forget_tokens()


@pytest.fixture
def live(dna, live_server, settings):
    """DNA can call us: the app is served for real and DNA is told where."""
    settings.PUBLIC_BASE_URL = live_server.url
    return dna


@pytest.fixture
def sim_terminal(terminal):
    """The practice's terminal, registered under the simulator's terminal id."""
    terminal.tid = "TIDPROV01"
    terminal.save(update_fields=["tid"])
    return terminal


@pytest.fixture
def vt_operator(practice):
    return make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=practice)


@pytest.fixture
def finance(practice):
    return make_staff(Role.FINANCE_ADMIN, practice=practice, is_staff=True)


# --- helpers ---------------------------------------------------------------------


def has_card_number(value) -> bool:
    """The project's one rule (primoro_payments.pan): a Luhn-valid 13-19 digit run anywhere.

    Our own hex ids (an axept reference is the payment id's hex) may hold long
    digit runs by chance; they are not card numbers, so a bare digit count is not the test.
    """
    return contains_card_number(
        json.dumps(value, default=str) if not isinstance(value, str) else value
    )


class Forms(HTMLParser):
    """Forms, buttons and the CSRF token of a page."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.buttons: list[dict] = []
        self.csrf = None
        self._button = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(attrs)
        elif tag == "input" and attrs.get("name") == "csrfmiddlewaretoken":
            self.csrf = attrs.get("value")
        elif tag == "button":
            self._button = {**attrs, "text": ""}

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None:
            self.buttons.append(self._button)
            self._button = None

    def handle_data(self, data):
        if self._button is not None:
            self._button["text"] += data


def forms(html: str) -> Forms:
    parser = Forms()
    parser.feed(html)
    return parser


def pay_on_hosted_page(http: httpx.Client, redirect_url: str, outcome: str = "card"):
    """Play the patient on DNA's hosted page: open it, press a button."""
    page = http.get(redirect_url, follow_redirects=True)
    assert page.status_code == 200, page.text
    action = forms(page.text).forms[0]["action"]
    base = str(page.url).split("/checkout/")[0]
    return http.post(f"{base}{action}", data={"outcome": outcome})


def wait_until(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def signed_callback(
    *,
    invoice_id: str,
    amount: Decimal,
    success: bool = True,
    settled: bool = True,
    transaction_id: str | None = None,
    currency: str = "GBP",
    secret: str = CLIENT_SECRET,
) -> dict:
    """A DNA callback body signed as the simulator (and DNA) sign it."""
    transaction_id = str(uuid.uuid4()) if transaction_id is None else transaction_id
    error_code = 0 if success else 1102
    body = {
        "id": transaction_id,
        "invoiceId": invoice_id,
        "amount": amount,
        "currency": currency,
        "accountId": "",
        "message": "Successful payment" if success else "Declined by issuer",
        "secure3D": True,
        "rrn": "123456789012",
        "errorCode": error_code,
        "success": success,
        "settled": settled,
        "paymentMethod": "card",
        "cardTokenId": "tok_abcdefabcdefabcdef",
        "cardExpiryDate": "12/30",
        "cardSchemeName": "VISA",
        "cardPanStarred": "4242********4242",
        "cardholderName": "ADA LOVELACE",
        "merchantCustomData": "",
    }
    body["signature"] = signing.dna_callback_signature(
        transaction_id=transaction_id,
        amount=amount,
        currency=currency,
        invoice_id=invoice_id,
        error_code=error_code,
        success=success,
        secret=secret,
    )
    return body


def json_body(payload: dict) -> bytes:
    from integrations.simulators.base import dump_json

    return dump_json(payload)


def terminal_headers(
    body: bytes,
    *,
    target_uri: str = "http://testserver/webhooks/dna/terminal/",
    secret: str = TERMINAL_SECRET,
    keyid: str = TERMINAL_KEY_ID,
    created: int | None = None,
) -> dict[str, str]:
    headers = signing.http_message_signature(
        method="POST",
        target_uri=target_uri,
        body=body,
        secret=secret,
        keyid=keyid,
        created=int(time.time()) if created is None else created,
    )
    return {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}


def online_payment(actor, practice, site, patient, *, amount="60.00", **extra):
    """An online payment, initiated (not yet presented)."""
    return services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=extra.pop("target_type", TargetType.INVOICE),
        target_id=extra.pop("target_id", "INV-7001"),
        amount=amount,
        method=extra.pop("method", PaymentMethod.ONLINE),
        **extra,
    )
