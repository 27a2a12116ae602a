"""No card number gets in: every URL of the project, every way of sending one, then the whole database and the logs.

The walk enumerates every pattern in the URLconf (`get_resolver`), fills its
path parameters with ids of real objects, and sends a card number as a query
parameter, a form field, nested JSON (PUT and PATCH too) and plain text, as a
signed-in superuser holding every role and, where a receiver needs it, with a
valid signature — so only the card number stands between the request and a
stored row. Every one must be refused with 400 (`card_number_refused`).
Afterwards every column of every table (sessions decoded, encrypted columns
decrypted) and everything logged must hold no card number.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern

from audit.actors import Actor
from audit.models import AuditEvent
from integrations.inbound.models import InboundEvent
from integrations.models import WebhookEvent
from integrations.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from integrations.simulators import signing as sim_signing
from payments import flows, services
from payments.api.models import IdempotencyKey
from payments.models import Payment, PaymentMethod, TargetType
from practices.models import Patient
from practices.roles import Role
from primoro_payments import crypto, pan_guard
from primoro_payments.pan import iter_card_numbers
from tests.factories import make_staff

pytestmark = pytest.mark.django_db

# Well-known test card numbers (Visa, Mastercard, Amex), plain and grouped.
CARDS = (
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",
    "5555 5555 5555 4444",
    "5555-5555-5555-4444",
    "378282246310005",
    "3782 822463 10005",
    "3782-822463-10005",
)
DIGITS = {card.replace(" ", "").replace("-", "") for card in CARDS}
DNA_SECRET = "pan-walk-dna-client-secret-0123456789"
TERMINAL_SECRET = "pan-walk-terminal-webhook-secret-0123"
TERMINAL_KEY_ID = "pan-walk-terminal-key"
GOCARDLESS_SECRET = "pan-walk-gocardless-webhook-secret-01"
INBOUND_SECRET = "pan-walk-inbound-secret-0123456789abcdef"
GUARDIAN_TOKEN = "pan-walk-guardian-token-0123456789abcdef"


def card_numbers(text: str) -> list[str]:
    """Card numbers in `text` by the project's rule (hex digests and UUIDs are not card numbers)."""
    return list(iter_card_numbers(text))


def test_the_scanner_finds_what_it_is_looking_for():
    digest = "ab" + "4111111111111111" + "c" * 30
    assert card_numbers(json.dumps({"note": "card 4111 1111 1111 1111 ok"})) == [
        "4111 1111 1111 1111"
    ]
    assert card_numbers(f"hash={digest}") == []
    assert card_numbers(f'{{"k": "{digest}", "n": 378282246310005}}') == ["378282246310005"]


# --- the URLconf ----------------------------------------------------------------------


def _routes(patterns, prefix: str = "") -> Iterator[tuple[str, object]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + _text(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + _text(entry.pattern), entry


def _route_of(path: str) -> str:
    """The pattern a path resolves to (a route shadowed by an earlier one names that one)."""
    return resolve(path).route.replace("^", "").replace("$", "")


def _text(pattern) -> str:
    if isinstance(pattern, RoutePattern):
        return str(pattern)
    assert isinstance(pattern, RegexPattern)
    return str(pattern).removeprefix("^").removesuffix("$")


ALL_ROUTES = sorted(_routes(get_resolver().url_patterns), key=lambda item: item[0])
_ROUTE_PARAM = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>")
_REGEX_PARAM = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")


class World:
    """Real objects for every kind of path parameter, and the secrets receivers check."""

    def __init__(self, practice, site, terminal, patient):
        self.user = make_staff(*Role, practice=practice, is_staff=True, is_superuser=True)
        actor = Actor.staff(self.user)
        common = dict(practice=practice, site=site, patient=patient, target_type=TargetType.INVOICE)
        self.payment = services.payment_create(
            actor=actor, target_id="INV-PAN", amount="300.00", method="cash", **common
        )
        services.tender_record_received(payment_id=self.payment.id, actor=actor)
        self.approval = services.refund_request(
            payment_id=self.payment.id, actor=actor, amount="280.00", reason_code="billing_error"
        ).approval
        issued = flows.pay_by_link_issue(
            actor=actor, target_id="INV-PAN-2", amount="25.00", **common
        )
        self.token = issued.token
        self.split = services.split_create(
            actor=actor,
            amount_due="50.00",
            target_id="INV-PAN-3",
            tenders=[
                services.TenderSpec(PaymentMethod.CASH, Decimal("20.00")),
                services.TenderSpec(PaymentMethod.VOUCHER, Decimal("30.00")),
            ],
            **common,
        )
        self.tender = Payment.objects.filter(split=self.split).order_by("amount").first()
        self.patient = patient

    def path_value(self, route: str, name: str, conv: str | None) -> str:
        known = {
            "payment_id": str(self.tender.id if "splits/" in route else self.payment.id),
            "approval_id": str(self.approval.id),
            "patient_id": str(self.patient.id),
            "split_id": str(self.split.id),
            "token": self.token,
            "module": "appointment_manager",
            "event_type": "deposit_requested",
            "app_label": "payments",
            "url": "no-such-admin-page/",
            "content_type_id": str(ContentType.objects.get_for_model(Payment).pk),
            "id": str(self.user.pk),
            "balance_id": str(self.payment.id),
        }
        if name == "object_id":
            return self._admin_object(route)
        if name in known:
            return known[name]
        return {"int": "1", "uuid": str(uuid.uuid4())}.get(conv or "str", "x")

    def _admin_object(self, route: str) -> str:
        parts = route.split("/")
        if parts[0] == "admin" and len(parts) > 3 and parts[1] != "r":
            model = apps.get_model(parts[1], parts[2])
            found = model._default_manager.order_by("pk").first()
            return str(found.pk) if found else "1"
        return str(self.payment.id)  # the "view on site" shortcut

    def concrete(self, route: str) -> str:
        path = _REGEX_PARAM.sub(lambda m: self.path_value(route, m["name"], None), route)
        path = _ROUTE_PARAM.sub(lambda m: self.path_value(route, m["name"], m["conv"]), path)
        return "/" + path


@pytest.fixture
def world(settings, practice, site, terminal, patient):
    settings.DNA_CLIENT_SECRET = DNA_SECRET
    settings.DNA_TERMINAL_WEBHOOK_SECRET = TERMINAL_SECRET
    settings.DNA_TERMINAL_WEBHOOK_KEY_ID = TERMINAL_KEY_ID
    settings.GOCARDLESS_WEBHOOK_SECRET = GOCARDLESS_SECRET
    settings.INBOUND_SECRETS = dict.fromkeys(settings.INBOUND_SECRETS, INBOUND_SECRET)
    settings.GUARDIAN_API_TOKEN = GUARDIAN_TOKEN
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.OUTBOX_RELAY_ON_COMMIT = False
    return World(practice, site, terminal, patient)


# --- bodies and the credentials each receiver checks ----------------------------------


def _dna_callback(world: World, extra: dict) -> dict:
    body = {
        "id": str(uuid.uuid4()),
        "invoiceId": str(world.payment.id),
        "amount": Decimal("300"),
        "currency": "GBP",
        "errorCode": 0,
        "success": True,
        "settled": True,
        **extra,
    }
    body["signature"] = sim_signing.dna_callback_signature(
        transaction_id=body["id"],
        amount=body["amount"],
        currency="GBP",
        invoice_id=body["invoiceId"],
        error_code=0,
        success=True,
        secret=DNA_SECRET,
    )
    body["amount"] = 300
    return body


def json_body(world: World, name: str | None, value) -> dict:
    """A body the receiver would accept, with `value` somewhere deep inside it."""
    nested = {"details": {"items": [{"reference": "ok"}, {"note": value}]}}
    if name == "dna-callback":
        return _dna_callback(world, {"merchantCustomData": nested})
    if name == "dna-terminal-webhook":
        return {"uti": str(world.payment.id), "status": "approved", "receipt": nested}
    if name == "gocardless-webhook":
        event = {
            "id": f"EV{uuid.uuid4().hex[:12].upper()}",
            "created_at": "2026-11-23T08:00:00.000Z",
            "resource_type": "payments",
            "action": "failed",
            "links": {"payment": "PM0001"},
            "details": {"origin": "bank", "description": nested},
        }
        return {"events": [event], "meta": {"webhook_id": "WB0001"}}
    if name == "inbound-event":
        return {
            "practice_id": str(world.payment.practice_id),
            "site_id": str(world.payment.site_id),
            "patient_id": str(world.patient.id),
            "appointment_id": f"APT-{uuid.uuid4().hex[:8]}",
            "amount": "30.00",
            "notes": nested,
        }
    return {"data": nested, "count": 1}


def credentials(name: str | None, method: str, path: str, body: bytes) -> dict[str, str]:
    """The headers that make the request authentic for the receiver behind `name`."""
    if name == "dna-terminal-webhook":
        return sim_signing.http_message_signature(
            method=method,
            target_uri=f"http://testserver{path}",
            body=body,
            secret=TERMINAL_SECRET,
            keyid=TERMINAL_KEY_ID,
            created=int(time.time()),
        )
    if name == "gocardless-webhook":
        return {"Webhook-Signature": sim_signing.gocardless_signature(body, GOCARDLESS_SECRET)}
    if name == "inbound-event":
        event_id = f"evt-{uuid.uuid4()}"
        return {
            SIGNATURE_HEADER: sign(INBOUND_SECRET, int(time.time()), body, event_id=event_id),
            EVENT_ID_HEADER: event_id,
        }
    if name == "guardian-signals":
        return {"Authorization": f"Bearer {GUARDIAN_TOKEN}"}
    return {}


def _encode(payload) -> bytes:
    return json.dumps(payload, default=str).encode()


KINDS = 7  # GET query; POST form, JSON, JSON number, text; PUT and PATCH JSON


def requests_for(world: World, route: str, entry, cards: list[str]):
    """(method, path, body, content type, headers) for each way a card number can arrive."""
    name = entry.name
    path = world.concrete(route)
    query = urlencode({"q": "fine", "note": cards[0]})
    form = urlencode({"reference": "ok", "note": cards[1], "q": "fine"}).encode()
    number = int(cards[3].replace(" ", "").replace("-", ""))
    bodies = [
        ("POST", form, "application/x-www-form-urlencoded"),
        ("POST", _encode(json_body(world, name, cards[2])), "application/json"),
        ("POST", _encode(json_body(world, name, number)), "application/json"),
        ("POST", f"reference ok; note {cards[4]}".encode(), "text/plain"),
        ("PUT", _encode(json_body(world, name, cards[5])), "application/json"),
        ("PATCH", _encode(json_body(world, name, cards[6])), "application/json"),
    ]
    yield "GET", f"{path}?{query}", b"", "", credentials(name, "GET", path, b"")
    for method, body, content_type in bodies:
        yield method, path, body, content_type, credentials(name, method, path, body)


def _refused(response) -> bool:
    if response.status_code != 400:
        return False
    if response["Content-Type"].startswith("application/json"):
        return response.json()["code"] == "card_number_refused"
    return "Nothing was saved" in response.content.decode()


def test_every_url_refuses_a_card_number_every_way_and_keeps_none(client, world, log_output):
    client.force_login(world.user)
    assert len(ALL_ROUTES) > 100  # the admin, the portal, webhooks, inbound, the API
    sent = 0
    for index, (route, entry) in enumerate(ALL_ROUTES):
        path = world.concrete(route)
        assert _route_of(path) == route  # the parameters fit the route
        cards = [CARDS[(index + kind) % len(CARDS)] for kind in range(KINDS)]
        for method, target, body, content_type, headers in requests_for(world, route, entry, cards):
            response = client.generic(
                method, target, data=body, content_type=content_type, headers=headers
            )
            assert _refused(response), (method, target, content_type, response.status_code)
            assert not DIGITS & set(re.findall(r"\d{13,19}", response.content.decode()))
            sent += 1
    assert sent == len(ALL_ROUTES) * KINDS
    assert_no_card_number_kept(log_output.getvalue())


def assert_no_card_number_kept(logged: str) -> None:
    assert "card_number_refused" in logged  # the logs were captured
    assert card_numbers(logged) == []
    assert card_numbers(database_text()) == []


def database_text() -> str:
    """Every column of every table as JSON text, sessions decoded, encrypted columns decrypted."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT row_to_json(t)::text FROM {connection.ops.quote_name(table)} t")
            parts.extend(row[0] for row in cursor.fetchall())
    parts.extend(json.dumps(session.get_decoded()) for session in Session.objects.all())
    for model, field in crypto.encrypted_fields():
        parts.extend(
            str(value) for value in model._default_manager.values_list(field.name, flat=True)
        )
    return "\n".join(parts)


RECEIVERS = ("dna-callback", "dna-terminal-webhook", "gocardless-webhook", "inbound-event")


def test_signed_requests_without_a_card_are_accepted(client, world):
    """The control: the same signed requests with an ordinary value get through and are stored."""
    routes = {entry.name: route for route, entry in ALL_ROUTES if entry.name in RECEIVERS}
    answers = {}
    for name, route in routes.items():
        path = world.concrete(route)
        body = _encode(json_body(world, name, "no card here"))
        response = client.generic(
            "POST",
            path,
            data=body,
            content_type="application/json",
            headers=credentials(name, "POST", path, body),
        )
        answers[name] = response.status_code
    assert answers == dict.fromkeys(RECEIVERS, 200)
    stored = {event.provider for event in WebhookEvent.objects.all()}
    assert stored == {"dna", "dna_terminal", "gocardless"}
    assert InboundEvent.objects.filter(event_type="deposit_requested").count() == 1


# --- headers we keep, and bodies in other charsets -------------------------------------

UTF16_TYPES = (
    ("utf-16", "application/json; charset=utf-16"),  # with a BOM, charset declared
    ("utf-16-le", "application/json"),  # no BOM, no charset: json.loads(bytes) still reads it
    ("utf-32", "text/plain"),
)


def _refused_naming(response, field: str) -> bool:
    """Refused as a card number; a JSON answer also names the header."""
    if not _refused(response):
        return False
    return not response["Content-Type"].startswith("application/json") or (
        response.json()["field"] == field
    )


def _charset_refused(response) -> bool:
    return response.status_code == 415 and response.json() == {
        "code": "unsupported_charset",
        "message": pan_guard.CHARSET_MESSAGE,
        "field": "Content-Type",
    }


def test_card_numbers_in_kept_headers_and_other_charsets_are_refused_everywhere(
    client, world, log_output
):
    """Idempotency-Key and X-Primoro-Event-Id are stored (IdempotencyKey, InboundEvent), and
    the receivers decode UTF-16/32 JSON: a card number there is refused on every URL, with a
    valid signature, before any view can keep it."""
    client.force_login(world.user)
    sent = 0
    for index, (route, entry) in enumerate(ALL_ROUTES):
        path = world.concrete(route)
        card = CARDS[index % len(CARDS)]
        response = client.get(path, {"q": "fine"}, headers={"Idempotency-Key": card})
        assert _refused_naming(response, "Idempotency-Key"), path
        body = _encode(json_body(world, entry.name, "no card here"))
        headers = {**credentials(entry.name, "POST", path, body), EVENT_ID_HEADER: card}
        response = client.post(path, body, content_type="application/json", headers=headers)
        assert _refused_naming(response, EVENT_ID_HEADER), path
        for encoding, content_type in UTF16_TYPES:
            body = json.dumps(json_body(world, entry.name, card), default=str).encode(encoding)
            response = client.generic(
                "POST",
                path,
                data=body,
                content_type=content_type,
                headers=credentials(entry.name, "POST", path, body),
            )
            assert _charset_refused(response), (path, encoding, response.status_code)
        sent += 2 + len(UTF16_TYPES)
    assert sent == len(ALL_ROUTES) * (2 + len(UTF16_TYPES))
    assert not IdempotencyKey.objects.exists()
    assert not InboundEvent.objects.exists()
    assert not WebhookEvent.objects.exists()
    assert_no_card_number_kept(log_output.getvalue())


def test_a_request_id_that_is_a_card_number_is_replaced_never_kept(
    client, world, log_output, django_capture_on_commit_callbacks
):
    """X-Request-ID is logged, stored on audit events, echoed and put on task messages; a
    card-like one is replaced by a fresh id (never refused: a proxy's id may look like one)."""
    routes = {entry.name: route for route, entry in ALL_ROUTES if entry.name in RECEIVERS}
    payment = services.payment_create(
        actor=Actor.staff(world.user),
        practice=world.payment.practice,
        site=world.payment.site,
        patient=world.patient,
        target_type=TargetType.INVOICE,
        target_id="INV-PAN-RID",
        amount="300.00",
        method=PaymentMethod.ONLINE,
    )
    services.payment_await_customer(payment_id=payment.id, actor=Actor.staff(world.user))
    world.payment = payment  # the DNA callback below captures it: an audit event with a request id
    for index, name in enumerate(RECEIVERS):
        path = world.concrete(routes[name])
        card = CARDS[index % len(CARDS)]
        body = _encode(json_body(world, name, "no card here"))
        headers = {**credentials(name, "POST", path, body), "X-Request-ID": card}
        with django_capture_on_commit_callbacks(execute=True):  # the webhook task runs eagerly
            response = client.post(path, body, content_type="application/json", headers=headers)
        assert response.status_code == 200, (name, response.content)
        assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"]), name
    payment.refresh_from_db()
    assert payment.state == "captured"
    captured = AuditEvent.objects.get(payment_id=payment.id, to_state="captured")
    assert re.fullmatch(r"[0-9a-f]{32}", captured.request_id)
    assert card_numbers(log_output.getvalue()) == []
    assert card_numbers(database_text()) == []


# Django's own "view on site" redirect (admin, staff only) lets a malformed UUID escape as
# a 500 (contenttypes.views.shortcut catches ValueError, not ValidationError). It stores
# and accepts nothing, so the card-number property holds; see docs/security.md.
DJANGO_SERVER_ERROR_ROUTES = {"admin/r/<path:content_type_id>/<path:object_id>/"}


def test_a_card_number_as_a_path_segment_is_never_accepted(client, world, log_output):
    """The guard reads queries and bodies; a card number in the path must still go nowhere."""
    client.force_login(world.user)
    client.raise_request_exception = False
    checked = 0
    for index, (route, entry) in enumerate(ALL_ROUTES):
        card = CARDS[index % len(CARDS)].replace(" ", "-")
        names = [
            m["name"] for m in _ROUTE_PARAM.finditer(route) if m["conv"] in (None, "str", "path")
        ]
        for name in names:
            path = "/" + _ROUTE_PARAM.sub(
                lambda m, name=name, card=card, route=route: (
                    card if m["name"] == name else world.path_value(route, m["name"], m["conv"])
                ),
                route,
            )
            for method in ("GET", "POST"):
                body = _encode({"reference": "ok"})
                response = client.generic(
                    method,
                    path,
                    data=body,
                    content_type="application/json",
                    headers=credentials(entry.name, method, path, body),
                )
                # Refused, not found or sent elsewhere; never accepted, never a server error.
                highest = 600 if route in DJANGO_SERVER_ERROR_ROUTES else 500
                assert 300 <= response.status_code < highest, (method, path, response.status_code)
                checked += 1
    assert checked > 20
    assert card_numbers(log_output.getvalue()) == []
    assert card_numbers(database_text()) == []


def test_the_database_scan_reads_encrypted_columns_decrypted(world):
    """The dump check is not fooled by ciphertext: a value in an encrypted column is found."""
    Patient.objects.filter(pk=world.patient.pk).update(phone="4111 1111 1111 1111")
    assert card_numbers(database_text()) == ["4111 1111 1111 1111"]
