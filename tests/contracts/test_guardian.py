"""The AI Guardian interface (§7): read-only, its own token, an allow-list, no card data."""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent
from integrations.guardian.signals import (
    SIGNAL_FIELDS,
    signal_sources,
)
from integrations.inbound.models import InboundEvent
from integrations.models import OutboxMessage
from integrations.webhooks import webhook_event_store
from payments import services
from payments.models import (
    ApprovalRequest,
    Payment,
    PaymentMethod,
    PaymentState,
    Refund,
    SplitPayment,
    TargetType,
)
from primoro_payments.pan import contains_card_number
from subscriptions.lifecycle import SubscriptionState
from subscriptions.provider_events import GoCardlessEvent
from subscriptions.services import (
    MandateIdentity,
    PaymentIdentity,
    subscription_mandate_register,
    subscription_payment_register,
)
from tests.contracts.conftest import GUARDIAN_TOKEN
from tests.factories import PatientFactory, SiteFactory
from tests.payments.helpers import captured, new_payment

pytestmark = pytest.mark.django_db

URL = "/api/v1/guardian/signals/"
DOCUMENTED_FIELDS = {
    "signal_id",
    "source",
    "subject_type",
    "practice_id",
    "site_id",
    "terminal_id",
    "payment_id",
    "state",
    "transition",
    "amount",
    "currency",
    "provider_reference",
    "mandate_reference",
    "occurred_at",
}
CARD_FIELDS = (
    "cardTokenId",
    "cardPanStarred",
    "cardExpiryDate",
    "cardholderName",
    "cardSchemeName",
    "payment_profile_id",
    "paymentProfileId",
)
TEST_PAN = "4111111111111111"  # a well-known test card number: it must never surface


def guardian(client=None):
    return client or Client(headers={"Authorization": f"Bearer {GUARDIAN_TOKEN}"})


def all_signals(client=None, **params) -> list[dict]:
    response = guardian(client).get(URL, {"limit": 500, **params})
    assert response.status_code == 200, response.content
    assert response.json()["has_more"] is False
    return response.json()["signals"]


@pytest.fixture
def subscription_sources():
    """What subscriptions registers from its AppConfig.ready(): its records' current states."""
    sources = [
        s
        for s in signal_sources()
        if s.name.startswith("subscription_") and s.name.endswith(".state")
    ]
    assert {s.name for s in sources} == {"subscription_payment.state", "subscription_mandate.state"}
    return sources


def every_payment_state(practice, site, patient, terminal, staff, manager, provider):
    """Payments that between them pass through every §3.2 state."""
    services.payment_create(
        actor=staff,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-P",
        amount="10.00",
        method=PaymentMethod.TERMINAL,
        terminal=terminal,
        initiate=False,
    )  # proposed
    authorised = new_payment(staff, practice, site, patient, terminal=terminal, target_id="INV-A")
    services.payment_await_customer(
        payment_id=authorised.id, actor=provider, provider_reference="a1"
    )
    services.payment_authorise(payment_id=authorised.id, actor=provider)
    voided = new_payment(staff, practice, site, patient, terminal=terminal, target_id="INV-V")
    services.payment_void(payment_id=voided.id, actor=manager, reason_code="billing_error")
    failed = new_payment(staff, practice, site, patient, terminal=terminal, target_id="INV-F")
    services.payment_fail(payment_id=failed.id, actor=provider, code="declined", reason="No")
    reconciled = captured(staff, provider, practice, site, patient, terminal=terminal)
    services.payment_reconcile(payment_id=reconciled.id, actor=provider, batch_reference="B-1")
    for amount in ("40.00", None):  # partially refunded, then refunded
        cash = new_payment(staff, practice, site, patient, method=PaymentMethod.CASH, target_id="C")
        services.tender_record_received(payment_id=cash.id, actor=staff)
        services.refund_request(
            payment_id=cash.id, actor=manager, amount=amount, reason_code="patient_request"
        )


def every_subscription_state(practice, patient):
    """A mandate and payments that between them hold every §3.3 state."""
    now = timezone.now()
    identity = MandateIdentity(
        gocardless_mandate_id="MD000GUARD",
        mandate_reference="PRIMORO-GUARD-1",
        gocardless_status="active",
        practice_id=practice.id,
        patient_id=patient.id,
        module="care_plan",
    )
    subscription_mandate_register(identity=identity, registered_at=now)
    for number, status in enumerate(["pending_submission", "confirmed", "failed", "cancelled"]):
        subscription_payment_register(
            identity=PaymentIdentity(
                gocardless_payment_id=f"PM000GUARD{number}",
                gocardless_mandate_id="MD000GUARD",
                gocardless_status=status,
                amount=Decimal("25.00"),
                currency="GBP",
                subscription_id="SUB-1",
            ),
            registered_at=now,
            event=GoCardlessEvent(
                id=f"EV000GUARD{number}",
                created_at=now,
                resource_type="payments",
                action="created",
                links={"payment": f"PM000GUARD{number}"},
            ),
        )


@pytest.fixture
def history(
    practice,
    site,
    patient,
    terminal,
    reception_actor,
    manager_actor,
    provider_actor,
    subscription_sources,
):
    every_payment_state(
        practice, site, patient, terminal, reception_actor, manager_actor, provider_actor
    )
    every_subscription_state(practice, patient)


# --- access ------------------------------------------------------------------------------


def test_the_guardian_reads_signals_with_its_token(history):
    response = guardian().get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert len(body["signals"]) > 20  # the default page holds all of this history
    assert body["has_more"] is False
    assert body["fields"] == list(SIGNAL_FIELDS)
    first = guardian().get(URL, {"limit": 5}).json()
    assert (len(first["signals"]), first["has_more"]) == (5, True)
    assert first["signals"] == body["signals"][:5]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Token {GUARDIAN_TOKEN}", f"Basic {GUARDIAN_TOKEN}", "Bearer "],
)
def test_without_the_token_it_is_401(history, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = Client(headers=headers).get(URL)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert "signals" not in response.json()


def test_no_configured_token_closes_the_interface(settings, history):
    settings.GUARDIAN_API_TOKEN = ""

    assert guardian().get(URL).status_code == 401
    assert Client(headers={"Authorization": "Bearer "}).get(URL).status_code == 401


def test_a_staff_session_is_not_the_guardian(client, reception):
    client.force_login(reception)

    assert client.get(URL).status_code == 401


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "head", "options"])
def test_every_verb_but_get_is_405(method):
    response = getattr(guardian(), method)(URL)

    assert response.status_code == 405
    assert response["Allow"] == "GET"


# --- contents ---------------------------------------------------------------------------------


def test_every_signal_has_exactly_the_documented_fields(history):
    signals = all_signals()

    assert set(SIGNAL_FIELDS) == DOCUMENTED_FIELDS
    assert signals
    for signal in signals:
        assert set(signal) == DOCUMENTED_FIELDS
        assert signal["transition"] is None or set(signal["transition"]) == {"from", "to"}


def test_the_fields_are_the_ones_docs_contracts_md_documents():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "contracts.md").read_text()
    section = docs.split("## AI Guardian", 1)[1]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))

    assert documented == DOCUMENTED_FIELDS


def test_every_payment_lifecycle_state_is_a_signal(history):
    signals = [s for s in all_signals() if s["subject_type"] == "payment"]

    assert {s["state"] for s in signals} == set(PaymentState.values)
    transitions = {
        (s["transition"]["from"], s["transition"]["to"]) for s in signals if s["transition"]
    }
    assert {
        ("proposed", "initiated"),
        ("initiated", "awaiting_customer_action"),
        ("awaiting_customer_action", "authorised"),
        ("initiated", "voided"),
        ("initiated", "failed"),
        ("awaiting_customer_action", "captured"),
        ("captured", "reconciled"),
        ("captured", "partially_refunded"),
        ("captured", "refunded"),
    } <= transitions


def test_every_subscription_state_is_a_signal_with_its_mandate_reference(history):
    signals = [s for s in all_signals() if s["subject_type"].startswith("subscription")]

    assert {s["state"] for s in signals} == set(SubscriptionState.values)
    assert {s["mandate_reference"] for s in signals} == {"PRIMORO-GUARD-1"}
    current = [s for s in signals if s["source"] == "subscription_payment.state"]
    assert {s["state"] for s in current} == {"payment_pending", "paid", "failed", "cancelled"}
    assert {s["provider_reference"] for s in current} == {f"PM000GUARD{n}" for n in range(4)}


def test_a_signal_carries_state_and_metadata(
    reception_actor, provider_actor, practice, site, patient, terminal
):
    payment = captured(
        reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="55.00"
    )

    capture = next(
        s for s in all_signals() if s["source"] == "payment.transition" and s["state"] == "captured"
    )

    assert capture["payment_id"] == str(payment.id)
    assert (capture["practice_id"], capture["site_id"], capture["terminal_id"]) == (
        str(practice.id),
        str(site.id),
        str(terminal.id),
    )
    assert capture["transition"] == {"from": "awaiting_customer_action", "to": "captured"}
    assert (capture["amount"], capture["currency"]) == ("55.00", "GBP")
    assert capture["provider_reference"] == payment.provider_reference
    assert capture["occurred_at"].endswith("+00:00")


def test_no_card_data_reaches_any_signal(
    history, reception_actor, provider_actor, practice, site, patient
):
    # Card-shaped data where a careless builder could pick it up: a profile id,
    # a failure reason, a provider reference, a stored webhook body.
    on_file = services.payment_create(
        actor=Actor.system("smart_treatment_proposals"),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.PAYMENT_REQUEST,
        target_id="PROP-1#1",
        amount="30.00",
        method=PaymentMethod.CARD_ON_FILE,
        payment_profile_id=f"profile-{TEST_PAN}",
    )
    services.payment_fail(
        payment_id=on_file.id,
        actor=provider_actor,
        code="declined",
        reason=f"card {TEST_PAN} declined",
        provider_reference=TEST_PAN,
    )
    webhook_event_store(
        provider="dna",
        event_id="ev-card-1",
        body={
            "invoiceId": str(on_file.id),
            "cardTokenId": "tok_5f2b9c",
            "cardPanStarred": "411111******1111",
            "cardExpiryDate": "12/29",
            "cardholderName": "A PATIENT",
            "cardSchemeName": "VISA",
        },
    )

    signals = all_signals()
    text = json.dumps(signals)

    assert any(s["payment_id"] == str(on_file.id) for s in signals)
    assert not contains_card_number(text)
    for name in CARD_FIELDS:
        assert name not in text
    for value in ("tok_5f2b9c", "411111******1111", "12/29", "A PATIENT", "profile-"):
        assert value not in text
    assert f"card {TEST_PAN}" not in text


# --- paging and filters ----------------------------------------------------------------------


def test_cursor_pages_cover_the_feed_once_in_order(history):
    everything = all_signals()
    seen, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = guardian().get(URL, params).json()
        seen.extend(page["signals"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break

    assert [s["signal_id"] for s in seen] == [s["signal_id"] for s in everything]
    assert len({s["signal_id"] for s in seen}) == len(seen)
    times = [s["occurred_at"] for s in seen]
    assert times == sorted(times)


def test_the_last_cursor_returns_only_what_happened_since(
    history, reception_actor, practice, site, patient, terminal
):
    everything = guardian().get(URL, {"limit": 500}).json()
    new_payment(reception_actor, practice, site, patient, terminal=terminal, target_id="INV-NEW")

    page = guardian().get(URL, {"cursor": everything["next_cursor"]}).json()

    assert {s["source"] for s in page["signals"]} == {"payment.transition", "payment.state"}
    assert {s["state"] for s in page["signals"]} == {"initiated"}


def test_since_filters_by_time(history, reception_actor, practice, site, patient, terminal):
    since = timezone.now()
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)

    signals = all_signals(since=since.isoformat())

    assert {s["payment_id"] for s in signals} == {str(payment.id)}


def test_practice_filter_and_a_practice_scoped_token(settings, history, practice, other_practice):
    services.payment_create(
        actor=Actor.system("smart_treatment_proposals"),
        practice=other_practice,
        site=other_practice.sites.get(),
        patient=other_practice.patients.get(),
        target_type=TargetType.PAYMENT_REQUEST,
        target_id="X",
        amount="5.00",
        method=PaymentMethod.CARD_ON_FILE,
        payment_profile_id="p",
    )

    only_other = all_signals(practice=str(other_practice.id))
    assert only_other
    assert {s["practice_id"] for s in only_other} == {str(other_practice.id)}
    assert {s["practice_id"] for s in all_signals()} == {str(practice.id), str(other_practice.id)}

    settings.GUARDIAN_PRACTICE_IDS = [str(other_practice.id)]
    assert {s["practice_id"] for s in all_signals()} == {str(other_practice.id)}
    refused = guardian().get(URL, {"practice": str(practice.id)})
    assert (refused.status_code, refused.json()["code"]) == (403, "practice_out_of_scope")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("cursor", "not-a-cursor"),
        ("since", "yesterday"),
        ("since", "2026-11-01T10:00:00"),
        ("practice", "7"),
        ("limit", "many"),
    ],
)
def test_bad_parameters_are_400_naming_them(param, value):
    response = guardian().get(URL, {param: value})

    assert response.status_code == 400
    assert response.json()["field"] == param


@pytest.mark.parametrize(
    ("since", "status"),
    [
        ("2026-11-01T10:00:00+19:35", 200),  # beyond PostgreSQL's ±15:59: read as UTC
        ("2026-13-01T10:00:00Z", 400),  # well-formed, no such month
        ("0001-01-01T00:00:00+01:00", 400),  # before year 1 in UTC
    ],
)
def test_since_is_read_as_utc_and_an_impossible_time_is_400(since, status):
    response = guardian().get(URL, {"since": since})

    assert response.status_code == status
    if status == 400:
        assert response.json()["field"] == "since"


# --- the Guardian credential changes nothing anywhere ------------------------------------


SAMPLE_VALUES = {
    "module": "appointment_manager",
    "event_type": "deposit_requested",
    "token": "not-a-link-token",
    "object_id": "1",
    "content_type_id": "1",
    "id": "1",
    "url": "anything/",
}


def _sample(pattern, ids: dict) -> str:
    text = str(pattern)
    if hasattr(pattern, "converters") and "(?P<" not in text:

        def fill(match):
            converter, name = match.group(1), match.group(2)
            if name in ids:
                return str(ids[name])
            if converter == "uuid":
                return str(uuid.uuid4())
            return SAMPLE_VALUES.get(name, "1")

        return re.sub(r"<(?:(\w+):)?(\w+)>", fill, text)
    text = text.lstrip("^").rstrip("$").replace("\\Z", "")
    text = re.sub(r"\(\?P<\w+>(\w+)(?:\|\w+)*\)", r"\1", text)  # first of an alternation
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLE_VALUES.get(m.group(1), "x"), text)


def _routes(resolver, prefix, ids):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry, prefix + _sample(entry.pattern, ids), ids)
        elif isinstance(entry, URLPattern):
            yield "/" + prefix + _sample(entry.pattern, ids), entry


def _world():
    return {
        "payments": sorted(
            Payment.objects.values_list("id", "state", "refunded_amount", "disputed")
        ),
        "refunds": Refund.objects.count(),
        "approvals": sorted(ApprovalRequest.objects.values_list("id", "status")),
        "splits": SplitPayment.objects.count(),
        "audit": AuditEvent.objects.count(),
        "outbox": OutboxMessage.objects.count(),
        "inbound": InboundEvent.objects.count(),
    }


def test_the_guardian_token_is_refused_on_every_mutating_route(
    reception_actor, provider_actor, manager_actor, practice, site, patient, terminal
):
    paid = captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    big = captured(
        reception_actor, provider_actor, practice, site, patient, terminal=terminal, amount="900.00"
    )
    approval = services.refund_request(
        payment_id=big.id, actor=manager_actor, reason_code="patient_request"
    ).approval
    split = services.split_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-S",
        amount_due="20.00",
        tenders=[
            services.TenderSpec(method=PaymentMethod.CASH, amount=Decimal("10.00")),
            services.TenderSpec(method=PaymentMethod.CASH, amount=Decimal("10.00")),
        ],
    )
    ids = {
        "payment_id": paid.id,
        "approval_id": approval.id,
        "patient_id": patient.id,
        "split_id": split.id,
    }
    before = _world()
    routes = list(_routes(get_resolver(), "", ids))
    unresolved = [path for path, pattern in routes if resolve(path).func is not pattern.callback]

    def accepted_by(client):
        accepted = []
        for path, _pattern in routes:
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                response = client.generic(
                    method,
                    path,
                    data=json.dumps({"amount": "1.00"}),
                    content_type="application/json",
                )
                if 200 <= response.status_code < 300:
                    accepted.append((method, path))
        return accepted

    token = {"Authorization": f"Bearer {GUARDIAN_TOKEN}"}
    # As a real client would call: no CSRF token, only the Guardian's bearer token.
    with_csrf = accepted_by(Client(enforce_csrf_checks=True, headers=token))
    # And even with CSRF checks off, the token authenticates nothing: the only
    # 2xx answers are the login forms shown again with an error.
    without_csrf = accepted_by(Client(headers=token))

    assert len(routes) > 40  # the whole URLconf was walked, admin included
    assert unresolved == []
    assert with_csrf == []
    assert {path for _method, path in without_csrf} <= {"/admin/login/", "/accounts/login/"}
    assert _world() == before


def test_the_guardian_route_is_in_the_walk():
    paths = [path for path, _ in _routes(get_resolver(), "", {})]

    assert URL in paths
    assert "/api/v1/inbound/appointment_manager/deposit_requested/" in paths


def test_a_payment_without_a_terminal_has_a_null_terminal_id(practice, reception_actor, terminal):
    site = SiteFactory(practice=practice)
    patient = PatientFactory(practice=practice)
    services.payment_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-9",
        amount="12.00",
        method=PaymentMethod.CASH,
    )

    for signal in all_signals():
        assert set(signal) == DOCUMENTED_FIELDS
        assert signal["terminal_id"] is None


def test_the_newest_moments_are_held_back_until_they_settle(
    settings, reception_actor, practice, site, patient, terminal
):
    new_payment(reception_actor, practice, site, patient, terminal=terminal)
    settings.GUARDIAN_SETTLE_SECONDS = 60

    assert all_signals() == []

    settings.GUARDIAN_SETTLE_SECONDS = 0
    assert {s["state"] for s in all_signals()} == {"initiated"}


@pytest.mark.parametrize("source", ["payment.state", "payment.transition"])
def test_a_forged_cursor_is_400_not_an_error(source):
    from integrations.guardian.signals import Cursor

    forged = Cursor(at=timezone.now(), source=source, key="not-a-key").encode()

    response = guardian().get(URL, {"cursor": forged})

    assert (response.status_code, response.json()["field"]) == (400, "cursor")
