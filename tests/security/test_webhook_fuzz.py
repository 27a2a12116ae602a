"""Bad input to the webhook and inbound receivers is a 4xx, never a 5xx (hypothesis, part of make test).

Bodies are random bytes, text, arbitrary JSON (any depth and type), signed
documents with wrong-typed fields, and bodies over the size limits; headers are
missing, malformed, wrongly signed or correctly signed (so the parsing behind
the signature check is reached too); content types and methods vary. The
examples are derandomised, so CI runs the same cases every time.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from integrations.inbound.contracts import CONTRACTS
from integrations.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign, valid_event_id
from integrations.simulators import signing as sim_signing

pytestmark = pytest.mark.django_db

DNA_SECRET = "fuzz-dna-client-secret-0123456789abcdef"
TERMINAL_SECRET = "fuzz-terminal-webhook-secret-0123456789"
TERMINAL_KEY_ID = "fuzz-terminal-key"
GOCARDLESS_SECRET = "fuzz-gocardless-webhook-secret-012345"
INBOUND_SECRET = "fuzz-inbound-secret-0123456789abcdef01"
UPLOAD_LIMIT = 64 * 1024  # DATA_UPLOAD_MAX_MEMORY_SIZE for these tests: huge bodies stay cheap

FUZZ = hypothesis_settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def receivers(settings):
    settings.DNA_CLIENT_SECRET = DNA_SECRET
    settings.DNA_TERMINAL_WEBHOOK_SECRET = TERMINAL_SECRET
    settings.DNA_TERMINAL_WEBHOOK_KEY_ID = TERMINAL_KEY_ID
    settings.GOCARDLESS_WEBHOOK_SECRET = GOCARDLESS_SECRET
    settings.INBOUND_SECRETS = dict.fromkeys(settings.INBOUND_SECRETS, INBOUND_SECRET)
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_LIMIT
    return settings


# --- strategies ------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
HUGE = [b"{" + b'"a":' * (UPLOAD_LIMIT // 4) + b"1}", b"x" * (UPLOAD_LIMIT + 1), b"[" * 300_000]
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.sampled_from([b"", b"{", b"null", b"[]", b'"text"', b"{}", b'{"events": 5}', *HUGE]),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zzz",
        "multipart/form-data",
        "application/octet-stream",
        "",
        "application/json; charset=nonsense",
    ]
)
methods = st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "PATCH", "DELETE"])
# Header values as HTTP can carry them (servers refuse control characters outright).
garbage = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def _post(client, method, path, body, content_type, headers):
    response = client.generic(method, path, data=body, content_type=content_type, headers=headers)
    assert response.status_code < 500, (path, response.status_code, response.content[:300])
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics shows what was reached
    return response


# --- GoCardless -------------------------------------------------------------------------


@FUZZ
@given(
    body=bodies,
    content_type=content_types,
    method=methods,
    signature=st.integers(0, 3),
    junk=garbage,
)
def test_gocardless_receiver(client, receivers, body, content_type, method, signature, junk):
    headers = [
        {},
        {"Webhook-Signature": junk},
        {"Webhook-Signature": sim_signing.gocardless_signature(body, "a-different-secret")},
        {"Webhook-Signature": sim_signing.gocardless_signature(body, GOCARDLESS_SECRET)},
    ][signature]
    _post(client, method, "/webhooks/gocardless/", body, content_type, headers)


gocardless_events = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(max_size=20), json_scalars),
            "resource_type": st.sampled_from(["payments", "mandates", "payouts", "refunds", 5]),
            "action": st.one_of(
                st.sampled_from(["failed", "confirmed", "cancelled", "paid_out", "created"]),
                json_scalars,
            ),
        },
        optional={
            "links": json_values,
            "details": json_values,
            "metadata": json_values,
            "created_at": json_values,
        },
    ),
    max_size=4,
)


@FUZZ
@given(events=st.one_of(gocardless_events, json_values), meta=json_values)
def test_gocardless_signed_documents_with_wrong_types(client, receivers, events, meta):
    body = json.dumps({"events": events, "meta": meta}).encode()
    headers = {"Webhook-Signature": sim_signing.gocardless_signature(body, GOCARDLESS_SECRET)}
    _post(client, "POST", "/webhooks/gocardless/", body, "application/json", headers)


# --- DNA hosted-checkout callbacks ------------------------------------------------------


callback_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "invoiceId": json_values,
        "amount": json_values,
        "currency": json_values,
        "errorCode": json_values,
        "success": json_values,
        "settled": json_values,
        "signature": json_values,
        "message": json_values,
    },
)


@FUZZ
@given(
    body=st.one_of(bodies, callback_fields.map(lambda d: json.dumps(d).encode())),
    content_type=content_types,
    method=methods,
)
def test_dna_callback_receiver(client, receivers, body, content_type, method):
    _post(client, method, "/webhooks/dna/", body, content_type, {})


@FUZZ
@given(
    transaction_id=st.text(max_size=40),
    invoice_id=st.one_of(st.uuids().map(str), st.text(max_size=40)),
    amount=st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
    success=st.booleans(),
    extra=st.dictionaries(st.sampled_from(["settled", "message", "rrn", "accountId"]), json_values),
)
def test_dna_callback_correctly_signed_with_odd_values(
    client, receivers, transaction_id, invoice_id, amount, success, extra
):
    error_code = 0 if success else 1102
    body = {
        **extra,
        "id": transaction_id,
        "invoiceId": invoice_id,
        "amount": str(amount),
        "currency": "GBP",
        "errorCode": error_code,
        "success": success,
        "signature": sim_signing.dna_callback_signature(
            transaction_id=transaction_id,
            amount=amount,
            currency="GBP",
            invoice_id=invoice_id,
            error_code=error_code,
            success=success,
            secret=DNA_SECRET,
        ),
    }
    _post(client, "POST", "/webhooks/dna/", json.dumps(body).encode(), "application/json", {})


# --- DNA axept terminal results (RFC 9421 signatures) -----------------------------------


@FUZZ
@given(
    body=bodies,
    content_type=content_types,
    method=methods,
    signing_mode=st.integers(0, 5),
    junk=garbage,
    skew=st.integers(-10_000, 10_000),
)
def test_dna_terminal_receiver(
    client, receivers, body, content_type, method, signing_mode, junk, skew
):
    path = "/webhooks/dna/terminal/"
    signed = sim_signing.http_message_signature(
        method=method,
        target_uri=f"http://testserver{path}",
        body=body,
        secret=TERMINAL_SECRET,
        keyid=TERMINAL_KEY_ID,
        created=int(time.time()) + (skew if signing_mode == 2 else 0),
    )
    headers = [
        {},
        {"Content-Digest": junk, "Signature-Input": junk, "Signature": junk},
        signed,
        {**signed, "Signature": f"sig1=:{junk}:"},
        {**signed, "Signature-Input": f"sig1={junk}"},
        signed,
    ][signing_mode]
    _post(client, method, path, body, content_type, headers)


# --- Inbound module triggers -------------------------------------------------------------

known_paths = st.sampled_from(sorted({(m, e) for m, e in CONTRACTS}))
odd_segments = st.text(
    alphabet=st.characters(blacklist_characters="/?#%\\", blacklist_categories=["Cs", "Cc"]),
    min_size=1,
    max_size=30,
)


@FUZZ
@given(
    where=st.one_of(known_paths, st.tuples(odd_segments, odd_segments)),
    body=st.one_of(bodies, json_values.map(lambda v: json.dumps(v).encode())),
    content_type=content_types,
    method=methods,
    signing_mode=st.integers(0, 4),
    junk=garbage,
    event_id=st.one_of(garbage, st.text(alphabet="ab-", max_size=250), st.just(None)),
)
def test_inbound_receiver(
    client, receivers, where, body, content_type, method, signing_mode, junk, event_id
):
    module, event_type = where
    path = f"/api/v1/inbound/{module}/{event_type}/"
    now = int(time.time())
    signed_id = event_id if valid_event_id(event_id) else "evt-signed"
    signature = [
        None,
        junk,
        sign("a-different-secret", now, body, event_id=signed_id),
        sign(INBOUND_SECRET, now - 3600, body, event_id=signed_id),
        sign(INBOUND_SECRET, now, body, event_id=signed_id),
    ][signing_mode]
    headers = {}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    if event_id is not None:
        headers[EVENT_ID_HEADER] = event_id
    _post(client, method, path, body, content_type, headers)


@FUZZ
@given(
    where=known_paths, document=json_values, practice_id=st.one_of(st.uuids().map(str), json_values)
)
def test_inbound_signed_documents_with_wrong_types(client, receivers, where, document, practice_id):
    """Correctly signed: every contract's own validation answers, with a 4xx."""
    module, event_type = where
    payload = (
        document if not isinstance(document, dict) else {**document, "practice_id": practice_id}
    )
    body = json.dumps(payload).encode()
    event_id = f"evt-{uuid.uuid4()}"
    headers = {
        SIGNATURE_HEADER: sign(INBOUND_SECRET, int(time.time()), body, event_id=event_id),
        EVENT_ID_HEADER: event_id,
    }
    _post(
        client, "POST", f"/api/v1/inbound/{module}/{event_type}/", body, "application/json", headers
    )
