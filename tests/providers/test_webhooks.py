"""DNA's two webhook receivers: signatures, storing once, duplicates, order, unknown payments."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.dna.client import DnaClient
from integrations.dna.selectors import unmatched_provider_events
from integrations.dna.types import CheckoutRequest
from integrations.models import Destination, OutboxMessage, WebhookEvent
from integrations.webhooks import webhook_event_process
from payments import flows, services
from payments.models import Payment, PaymentState, TargetType
from practices.roles import Role
from tests.factories import PracticeFactory, make_staff
from tests.providers.conftest import (
    TERMINAL_KEY_ID,
    json_body,
    online_payment,
    pay_on_hosted_page,
    signed_callback,
    terminal_headers,
)

S = PaymentState
CALLBACK = "/webhooks/dna/"
TERMINAL = "/webhooks/dna/terminal/"


def _post_callback(client, django_capture_on_commit_callbacks, payload, raw=None):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(
            CALLBACK,
            data=raw if raw is not None else json_body(payload),
            content_type="application/json",
        )


def _presented(actor, practice, site, patient, amount="60.00"):
    payment = online_payment(actor, practice, site, patient, amount=amount)
    services.payment_await_customer(payment_id=payment.id, actor=actor)
    return Payment.objects.get(pk=payment.pk)


def _terminal_body(payment_id, status="approved", **extra):
    return {
        "uti": str(payment_id),
        "tid": "TIDPROV01",
        "status": status,
        "transactionId": str(uuid.uuid4()) if status != "cancelled" else None,
        "amount": Decimal("85"),
        "currency": "GBP",
        "reference": uuid.UUID(str(payment_id)).hex,
        "authCode": "ABCDEF",
        "rrn": "123456789012",
        "errorCode": 0,
        "message": "Approved",
        "paymentMethod": "card",
        "cardSchemeName": "VISA",
        "cardPanStarred": "4242********4242",
        "timestamp": "2026-11-23T10:00:00.000Z",
        **extra,
    }


# --- signatures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    ["wrong_secret", "amount_changed", "no_signature", "success_flipped", "not_json"],
)
def test_a_callback_without_a_valid_signature_is_403_and_not_stored(
    dna,
    client,
    django_capture_on_commit_callbacks,
    reception_actor,
    practice,
    site,
    patient,
    tamper,
):
    payment = _presented(reception_actor, practice, site, patient)
    payload = signed_callback(invoice_id=str(payment.id), amount=Decimal("60.00"))
    raw = None
    if tamper == "wrong_secret":
        payload = signed_callback(
            invoice_id=str(payment.id), amount=Decimal("60.00"), secret="not-the-secret"
        )
    elif tamper == "amount_changed":
        payload["amount"] = Decimal("0.60")
    elif tamper == "no_signature":
        del payload["signature"]
    elif tamper == "success_flipped":
        payload["success"] = False
    else:
        raw = b"signature=abc&amount=60"

    response = _post_callback(client, django_capture_on_commit_callbacks, payload, raw)

    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"
    assert not WebhookEvent.objects.exists()
    payment.refresh_from_db()
    assert payment.state == S.AWAITING_CUSTOMER_ACTION


def test_a_valid_callback_is_stored_once_without_card_fields(
    dna,
    client,
    django_capture_on_commit_callbacks,
    reception_actor,
    practice,
    site,
    patient,
    log_output,
):
    payment = _presented(reception_actor, practice, site, patient)
    payload = signed_callback(invoice_id=str(payment.id), amount=Decimal("60.00"))

    first = _post_callback(client, django_capture_on_commit_callbacks, payload)
    again = _post_callback(client, django_capture_on_commit_callbacks, payload)

    assert (first.status_code, first.json()) == (200, {"status": "stored"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    event = WebhookEvent.objects.get()
    assert event.status == WebhookEvent.Status.PROCESSED
    assert Decimal(str(event.body["amount"])) == Decimal("60")  # exact, never a float
    assert {"cardTokenId", "cardPanStarred", "cardExpiryDate", "cardholderName"}.isdisjoint(
        event.body
    )
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED and payment.provider_reference == payload["id"]
    logs = log_output.getvalue()
    # The masked PAN's parts (never just "4242": a random transaction id may hold those digits).
    for card_field in ("cardPanStarred", "cardTokenId", "cardExpiryDate", "cardholderName"):
        assert payload[card_field] not in logs
    assert "4242****" not in logs and "****4242" not in logs and "LOVELACE" not in logs


@pytest.mark.parametrize("transaction_id", ["", "   "])
def test_a_signed_callback_without_a_transaction_id_is_refused(
    dna,
    client,
    django_capture_on_commit_callbacks,
    reception_actor,
    practice,
    site,
    patient,
    transaction_id,
):
    payment = _presented(reception_actor, practice, site, patient)
    payload = signed_callback(
        invoice_id=str(payment.id), amount=Decimal("60.00"), transaction_id=transaction_id
    )

    response = _post_callback(client, django_capture_on_commit_callbacks, payload)

    assert response.status_code == 400 and response.json()["code"] == "invalid_body"
    assert not WebhookEvent.objects.exists()
    payment.refresh_from_db()
    assert payment.state == S.AWAITING_CUSTOMER_ACTION


def test_one_transaction_id_for_two_invoices_is_two_events(
    dna, client, django_capture_on_commit_callbacks, reception_actor, practice, site, patient
):
    first = _presented(reception_actor, practice, site, patient)
    second = _presented(reception_actor, practice, site, patient, amount="25.00")
    shared = str(uuid.uuid4())

    for payment, amount in ((first, "60.00"), (second, "25.00")):
        answer = _post_callback(
            client,
            django_capture_on_commit_callbacks,
            signed_callback(
                invoice_id=str(payment.id), amount=Decimal(amount), transaction_id=shared
            ),
        )
        assert answer.json() == {"status": "stored"}

    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {
        f"{first.id}:{shared}:charged",
        f"{second.id}:{shared}:charged",
    }
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == second.state == S.CAPTURED


@pytest.mark.parametrize(
    "tamper", ["wrong_secret", "body_changed", "stale", "future", "wrong_keyid", "no_headers"]
)
def test_a_terminal_result_without_a_valid_signature_is_403_and_not_stored(
    dna,
    client,
    django_capture_on_commit_callbacks,
    reception_actor,
    practice,
    site,
    patient,
    sim_terminal,
    tamper,
):
    payment = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-1",
        amount="85.00",
        terminal=sim_terminal,
    )
    body = json_body(_terminal_body(payment.id))
    headers = terminal_headers(body)
    if tamper == "wrong_secret":
        headers = terminal_headers(body, secret="another-secret")
    elif tamper == "body_changed":
        body = body.replace(b'"approved"', b'"declined"')
    elif tamper == "stale":
        headers = terminal_headers(body, created=int(time.time()) - 3600)
    elif tamper == "future":
        headers = terminal_headers(body, created=int(time.time()) + 3600)
    elif tamper == "wrong_keyid":
        headers = terminal_headers(body, keyid="someone-else")
    else:
        headers = {}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(TERMINAL, data=body, content_type="application/json", **headers)

    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"
    assert not WebhookEvent.objects.exists()
    assert Payment.objects.get(pk=payment.pk).state == S.INITIATED


def test_the_terminal_signature_covers_the_url_we_gave_dna(
    db, dna, client, django_capture_on_commit_callbacks, settings
):
    body = json_body(_terminal_body(uuid.uuid4()))
    headers = terminal_headers(body, target_uri="https://elsewhere.example/webhooks/dna/terminal/")

    response = client.post(TERMINAL, data=body, content_type="application/json", **headers)

    assert response.status_code == 403
    settings.PUBLIC_BASE_URL = "https://elsewhere.example"
    with django_capture_on_commit_callbacks(execute=True):
        accepted = client.post(TERMINAL, data=body, content_type="application/json", **headers)
    assert accepted.status_code == 200


# --- over real HTTP: DNA (the simulator) signs with a secret we do not hold ---------------------


@pytest.mark.django_db(transaction=True)
def test_a_callback_dna_signs_with_another_secret_is_refused_over_http(
    live, http, settings, practice, site, patient
):
    session = flows.online_checkout_start(
        actor=Actor.for_patient(patient),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-SIG-1",
        amount="60.00",
        return_url="https://app.example/return",
    )
    settings.DNA_CLIENT_SECRET = "a-secret-dna-does-not-sign-with-0123"  # rotated on our side only

    pay_on_hosted_page(http, session.redirect_url)

    [delivery] = live.deliveries()
    assert delivery["url"] == f"{settings.PUBLIC_BASE_URL}/webhooks/dna/"  # the live app
    assert delivery["status_code"] == 403
    assert not WebhookEvent.objects.exists()
    assert Payment.objects.get(pk=session.payment.pk).state == S.AWAITING_CUSTOMER_ACTION


@pytest.mark.django_db(transaction=True)
def test_a_terminal_result_signed_with_another_secret_is_refused_over_http(
    live, settings, reception_actor, practice, site, patient, sim_terminal
):
    payment = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-SIG-2",
        amount="85.00",
        terminal=sim_terminal,
    )
    assert Payment.objects.get(pk=payment.pk).state == S.AWAITING_CUSTOMER_ACTION
    settings.DNA_TERMINAL_WEBHOOK_SECRET = "a-secret-dna-does-not-sign-with-4567"

    live.terminal("TIDPROV01", "approve")

    [delivery] = live.deliveries()
    assert delivery["url"] == f"{settings.PUBLIC_BASE_URL}/webhooks/dna/terminal/"
    assert delivery["status_code"] == 403
    assert not WebhookEvent.objects.exists()
    assert Payment.objects.get(pk=payment.pk).state == S.AWAITING_CUSTOMER_ACTION


# --- unknown payments, order, contradictions -----------------------------------------------


def _charge_outside_primoro(sim, http, practice, amount="12.00") -> tuple[str, str]:
    """A charge at DNA on the practice's terminal that is none of our payments: (invoice, id)."""
    invoice_id = str(uuid.uuid4())
    with DnaClient() as dna:
        checkout = dna.hosted_checkout(
            CheckoutRequest(
                invoice_id=invoice_id,
                amount=Decimal(amount),
                currency="GBP",
                terminal_id=practice.dna_terminal_id,
                description="Outside Primoro",
                return_url="https://elsewhere.example/",
                failure_return_url="https://elsewhere.example/",
                callback_url="http://127.0.0.1:9/",
                failure_callback_url="http://127.0.0.1:9/",
            )
        )
    pay_on_hosted_page(http, checkout.redirect_url)
    [charge] = sim.transactions(invoice_id)
    return invoice_id, charge["id"]


def test_an_event_for_an_unknown_payment_is_kept_as_unmatched_and_surfaced(
    dna, http, client, django_capture_on_commit_callbacks, practice, sim_terminal, settings
):
    stranger, transaction_id = _charge_outside_primoro(dna, http, practice)
    callback = signed_callback(
        invoice_id=stranger, amount=Decimal("12.00"), transaction_id=transaction_id
    )
    _post_callback(client, django_capture_on_commit_callbacks, callback)
    nobodys = str(uuid.uuid4())  # DNA holds no transaction for it: no terminal to go by
    _post_callback(
        client,
        django_capture_on_commit_callbacks,
        signed_callback(invoice_id=nobodys, amount=Decimal("5.00")),
    )
    body = json_body(_terminal_body(uuid.uuid4()))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(TERMINAL, data=body, content_type="application/json", **terminal_headers(body))

    online = WebhookEvent.objects.get(provider="dna", resource_ref=stranger)
    unknown = WebhookEvent.objects.get(provider="dna", resource_ref=nobodys)
    terminal = WebhookEvent.objects.get(provider="dna_terminal")
    assert {online.status, unknown.status, terminal.status} == {WebhookEvent.Status.UNMATCHED}
    assert stranger in online.last_error
    assert online.practice_id == practice.id  # DNA's terminal id for the invoice says whose
    assert terminal.practice_id == practice.id  # the terminal result carries its tid
    assert unknown.practice_id is None
    finance = make_staff(Role.FINANCE_ADMIN, practice=practice)
    outsider = make_staff(Role.FINANCE_ADMIN, practice=PracticeFactory())
    superuser = make_staff(Role.FINANCE_ADMIN, practice=practice, is_superuser=True, is_staff=True)
    assert set(unmatched_provider_events(finance)) == {online, terminal}
    assert list(unmatched_provider_events(outsider)) == []
    assert set(unmatched_provider_events(superuser)) == {online, unknown, terminal}
    client.force_login(superuser)
    page = client.get("/admin/dna/dnawebhookevent/?status__exact=unmatched")
    assert page.status_code == 200 and stranger in page.content.decode()


def test_an_unknown_payment_is_attributed_later_when_dna_cannot_be_asked_now(
    dna, http, client, django_capture_on_commit_callbacks, practice
):
    stranger, transaction_id = _charge_outside_primoro(dna, http, practice)
    dna.fault("/v2/transactions/", "503", count=1)  # one bounded look-up, never retried inline

    _post_callback(
        client,
        django_capture_on_commit_callbacks,
        signed_callback(
            invoice_id=stranger, amount=Decimal("12.00"), transaction_id=transaction_id
        ),
    )

    event = WebhookEvent.objects.get(provider="dna")
    assert event.status == WebhookEvent.Status.FAILED and event.practice_id is None
    assert event.next_attempt_at is not None and stranger in event.last_error

    assert webhook_event_process(event.pk) == WebhookEvent.Status.UNMATCHED  # DNA is back
    event.refresh_from_db()
    assert event.practice_id == practice.id and event.attempts == 2


def test_events_out_of_order_change_nothing_twice(
    dna, client, django_capture_on_commit_callbacks, reception_actor, practice, site, patient
):
    payment = _presented(reception_actor, practice, site, patient)
    txn = str(uuid.uuid4())
    charged = signed_callback(invoice_id=str(payment.id), amount=Decimal("60"), transaction_id=txn)
    authorised = signed_callback(
        invoice_id=str(payment.id), amount=Decimal("60"), transaction_id=txn, settled=False
    )
    earlier_decline = signed_callback(
        invoice_id=str(payment.id), amount=Decimal("60"), success=False
    )

    for payload in (charged, authorised, earlier_decline):
        _post_callback(client, django_capture_on_commit_callbacks, payload)

    payment.refresh_from_db()
    assert payment.state == S.CAPTURED and payment.provider_reference == txn
    events = {e.event_type: e for e in WebhookEvent.objects.all()}
    assert events["payment.charged"].status == WebhookEvent.Status.PROCESSED
    assert events["payment.authorised"].status == WebhookEvent.Status.PROCESSED
    assert "late authorisation" in events["payment.authorised"].last_error
    assert events["payment.declined"].status == WebhookEvent.Status.IGNORED
    assert (
        OutboxMessage.objects.filter(payment_id=payment.id, destination=Destination.PMS).count()
        == 1
    )
    assert not AuditEvent.objects.filter(event_type=EventType.PAYMENT_EXCEPTION_FLAGGED).exists()


def test_a_decline_of_the_captured_transaction_is_flagged_not_applied(
    dna, client, django_capture_on_commit_callbacks, reception_actor, practice, site, patient
):
    payment = _presented(reception_actor, practice, site, patient)
    txn = str(uuid.uuid4())
    _post_callback(
        client,
        django_capture_on_commit_callbacks,
        signed_callback(invoice_id=str(payment.id), amount=Decimal("60"), transaction_id=txn),
    )

    _post_callback(
        client,
        django_capture_on_commit_callbacks,
        signed_callback(
            invoice_id=str(payment.id), amount=Decimal("60"), transaction_id=txn, success=False
        ),
    )

    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    declined = WebhookEvent.objects.get(event_type="payment.declined")
    assert declined.status == WebhookEvent.Status.UNMATCHED
    assert declined.last_error.startswith("declined_after_captured")
    flag = AuditEvent.objects.get(event_type=EventType.PAYMENT_EXCEPTION_FLAGGED)
    assert flag.payment_id == payment.id and flag.actor_kind == "provider"
    task = OutboxMessage.objects.get(
        payment_id=payment.id, destination=Destination.TASK_MANAGER, event_type="task.create"
    )
    assert task.payload["task_type"] == "payment_exception"


@pytest.mark.parametrize(
    ("first_success", "second_amount", "code"),
    [(False, "60", "charge_after_failed"), (True, "59.99", "amount_mismatch")],
)
def test_contradictory_charges_are_flagged(
    dna,
    client,
    django_capture_on_commit_callbacks,
    reception_actor,
    practice,
    site,
    patient,
    first_success,
    second_amount,
    code,
):
    payment = _presented(reception_actor, practice, site, patient)
    if not first_success:
        _post_callback(
            client,
            django_capture_on_commit_callbacks,
            signed_callback(invoice_id=str(payment.id), amount=Decimal("60"), success=False),
        )

    _post_callback(
        client,
        django_capture_on_commit_callbacks,
        signed_callback(invoice_id=str(payment.id), amount=Decimal(second_amount)),
    )

    payment.refresh_from_db()
    assert payment.state == (S.FAILED if not first_success else S.AWAITING_CUSTOMER_ACTION)
    charged = WebhookEvent.objects.get(event_type="payment.charged")
    assert charged.status == WebhookEvent.Status.UNMATCHED
    assert charged.last_error.startswith(code)
    assert AuditEvent.objects.filter(
        event_type=EventType.PAYMENT_EXCEPTION_FLAGGED, payment_id=payment.id, reason_code=code
    ).exists()


# --- live: redelivery and concurrency ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_redelivered_callbacks_and_terminal_results_change_nothing_twice(
    live, http, reception_actor, practice, site, patient, sim_terminal
):
    session = flows.online_checkout_start(
        actor=Actor.for_patient(patient),
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-1",
        amount="60.00",
        return_url="https://app.example/return",
    )
    pay_on_hosted_page(http, session.redirect_url)
    terminal_payment = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-2",
        amount="30.00",
        terminal=sim_terminal,
    )
    live.terminal("TIDPROV01", "approve")
    audit_before = AuditEvent.objects.count()
    outbox_before = OutboxMessage.objects.count()

    again = [live.redeliver(1), live.redeliver(2), live.redeliver(1)]

    assert [d["status_code"] for d in again] == [200, 200, 200]
    assert WebhookEvent.objects.count() == 2
    assert AuditEvent.objects.count() == audit_before
    assert OutboxMessage.objects.count() == outbox_before
    assert Payment.objects.get(pk=session.payment.pk).state == S.CAPTURED
    assert Payment.objects.get(pk=terminal_payment.pk).state == S.CAPTURED


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_event_capture_once(
    live, live_server, reception_actor, practice, site, patient
):
    payment = _presented(reception_actor, practice, site, patient)
    body = json_body(signed_callback(invoice_id=str(payment.id), amount=Decimal("60")))
    barrier = threading.Barrier(6)
    answers: list[dict] = []

    def deliver():
        barrier.wait()
        response = httpx.post(
            f"{live_server.url}{CALLBACK}",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=15,
        )
        answers.append(response.json())

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a["status"] for a in answers) == ["duplicate"] * 5 + ["stored"]
    assert WebhookEvent.objects.count() == 1
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    assert (
        OutboxMessage.objects.filter(payment_id=payment.id, destination=Destination.PMS).count()
        == 1
    )
    assert AuditEvent.objects.filter(payment_id=payment.id, to_state=S.CAPTURED).count() == 1


def test_terminal_key_id_is_the_configured_one(dna, settings):
    assert settings.DNA_TERMINAL_WEBHOOK_KEY_ID == TERMINAL_KEY_ID


def test_a_terminal_decline_after_its_approval_is_flagged(
    dna,
    client,
    django_capture_on_commit_callbacks,
    reception_actor,
    practice,
    site,
    patient,
    sim_terminal,
):
    payment = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-T",
        amount="85.00",
        terminal=sim_terminal,
    )
    for status in ("approved", "declined"):
        body = json_body(_terminal_body(payment.id, status=status))
        with django_capture_on_commit_callbacks(execute=True):
            client.post(
                TERMINAL, data=body, content_type="application/json", **terminal_headers(body)
            )

    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    declined = WebhookEvent.objects.get(event_type="terminal.declined")
    assert declined.status == WebhookEvent.Status.UNMATCHED
    assert declined.last_error.startswith("declined_after_captured")
