"""Any request carrying a card number is refused before a view sees it; nothing is stored or logged."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from payments.models import Refund

PAN = "4111 1111 1111 1111"
DIGITS = "4111111111111111"


def test_query_string(client, db, log_output):
    response = client.get(f"/payments/?q={DIGITS}")
    assert response.status_code == 400
    assert DIGITS not in response.content.decode()
    assert "card number" in response.content.decode()
    assert DIGITS not in log_output.getvalue()


def test_form_field_in_a_portal_form(
    client,
    refund_manager,
    practice,
    site,
    patient,
    terminal,
    reception_actor,
    provider_actor,
    log_output,
):
    from tests.payments.helpers import captured

    payment = captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    client.force_login(refund_manager)
    response = client.post(
        f"/payments/{payment.id}/refund/",
        {"kind": "full", "reason_code": "other", "notes": f"patient card {PAN}"},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "Nothing was saved" in body and "notes" in body and PAN not in body
    assert not Refund.objects.exists()
    assert not AuditEvent.objects.filter(payload__icontains="4111").exists()
    assert PAN not in log_output.getvalue() and DIGITS not in log_output.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        {"note": DIGITS},
        {"nested": {"list": [1, {"pan": PAN}]}},
        {"number": int(DIGITS)},
    ],
)
def test_json_body_anywhere(client, db, body):
    response = client.post(
        "/webhooks/anything/", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "card_number_refused"
    assert DIGITS not in json.dumps(answer) and PAN not in json.dumps(answer)


def test_plain_text_body(client, db):
    response = client.post("/webhooks/anything/", data=f"card={DIGITS}", content_type="text/plain")
    assert response.status_code == 400


def test_ordinary_numbers_pass(client, db):
    response = client.post(
        "/webhooks/anything/",
        data=json.dumps(
            {"amount": 120.5, "invoice": "INV-2026-000123", "rrn": "123456789012", "ts": 1763880000}
        ),
        content_type="application/json",
    )
    assert response.status_code == 404  # reached URL resolution: not refused by the guard
