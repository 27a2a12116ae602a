"""Every inbound contract over real HTTP: the request examples of docs/contracts.md, as written.

Each example is read from the page (tests/docs_examples.py), its id
placeholders replaced by this test's records, signed the way a module signs
(`integrations.signing.request_headers`) and POSTed with httpx to the app
served by pytest-django's live server. The docs and the contracts cannot
drift: a changed field breaks the example, the example breaks this test.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from audit.actors import Actor
from integrations.inbound.contracts import CONTRACTS
from integrations.inbound.models import InboundEvent
from integrations.signing import request_headers
from payments import deposits, services
from payments.models import Deposit, Payment, SupplierPayment
from tests.contracts.conftest import INBOUND_SECRETS, inbound_path
from tests.docs_examples import inbound_examples
from tests.factories import PatientFactory
from tests.payments.helpers import new_payment

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = inbound_examples()
PROVIDER = Actor.provider("dna")


def _paid_deposit(world) -> None:
    """attendance_reported reports on a deposit we collected for APT-88120."""
    deposit = deposits.deposit_request(
        actor=Actor.system("appointment_manager"),
        practice=world["practice"],
        site=world["site"],
        patient=world["patient"],
        appointment_id="APT-88120",
        amount="75.00",
    )
    services.payment_capture(payment_id=deposit.payment_id, actor=PROVIDER)


# What each event must have done, beyond a 200 and its stored InboundEvent.
EFFECTS = {
    ("appointment_manager", "deposit_requested"): lambda w, answer: (
        Deposit.objects.get(appointment_id="APT-88120").status == "requested"
        and answer["payment_state"] == "awaiting_customer_action"
    ),
    ("appointment_manager", "attendance_reported"): lambda w, answer: (
        Deposit.objects.get(appointment_id="APT-88120").status == "forfeited"
        and answer["changed"] is True
    ),
    ("rewards_manager", "credit_apply"): lambda w, answer: (
        str(Payment.objects.get(pk=w["payment"].pk).rewards_credit_applied) == "20.00"
        and answer["charge_amount"] == "100.00"
    ),
    ("smart_treatment_proposals", "proposal_accepted"): lambda w, answer: (
        len(answer["payments"]) == 3
        and Payment.objects.filter(payment_profile_id="dna-profile-7Hq2").count() == 3
    ),
    ("acp_finance_centre", "mandate_updated"): lambda w, answer: answer["recorded"] is True,
    ("acp_finance_centre", "payment_retry"): lambda w, answer: (
        answer["collection_initiated"] is False
    ),
    ("acp_finance_centre", "dunning_step"): lambda w, answer: answer["recorded"] is True,
    ("acp_finance_centre", "usage_charge"): lambda w, answer: (
        Payment.objects.get(target_id="USG-2026-11").state == answer["payment_state"]
    ),
    ("inventory_manager", "invoice_matched"): lambda w, answer: (
        SupplierPayment.objects.get(supplier_invoice_id="SUP-INV-88").payment_id
        == uuid.UUID(answer["payment_id"])
    ),
}
SETUP = {("appointment_manager", "attendance_reported"): _paid_deposit}


@pytest.fixture
def world(practice, site, reception_actor, terminal):
    patient = PatientFactory(practice=practice, pms_patient_id="PMS-10442")
    payment = new_payment(
        reception_actor, practice, site, patient, terminal=terminal, amount="120.00"
    )
    return {"practice": practice, "site": site, "patient": patient, "payment": payment}


def _body(example: dict, world) -> bytes:
    text = json.dumps(example)
    for placeholder, value in {
        "2b9e…": world["practice"].id,
        "7c1d…": world["site"].id,
        "3f0a…": world["patient"].id,
        "0c3e…": world["payment"].id,
    }.items():
        text = text.replace(json.dumps(placeholder), json.dumps(str(value)))
    assert "…" not in text, f"an unknown placeholder in {text}"
    return text.encode()


def test_every_inbound_contract_has_a_documented_example():
    assert set(EXAMPLES) == {(str(m), e) for m, e in CONTRACTS}
    assert set(EFFECTS) == set(EXAMPLES)


@pytest.mark.parametrize(
    ("module", "event_type"), sorted(EXAMPLES), ids=[f"{m}/{e}" for m, e in sorted(EXAMPLES)]
)
def test_the_documented_example_is_accepted_over_http(live_server, world, module, event_type):
    if (module, event_type) in SETUP:
        SETUP[module, event_type](world)
    body = _body(EXAMPLES[module, event_type], world)
    event_id = f"{module}-{uuid.uuid4()}"
    url = f"{live_server.url}{inbound_path(module, event_type)}"
    headers = request_headers(INBOUND_SECRETS[module], body, event_id=event_id)

    answer = httpx.post(url, content=body, headers=headers, timeout=15)
    replayed = httpx.post(
        url, content=body, headers={**headers, "X-Primoro-Event-Id": f"{event_id}-again"}
    )

    assert answer.status_code == 200, answer.text
    assert EFFECTS[module, event_type](world, answer.json())
    stored = InboundEvent.objects.get(module=module, event_id=event_id)
    assert (stored.event_type, stored.practice_id) == (event_type, world["practice"].id)
    # The same signed request under a new event id is refused: nothing is done twice.
    assert (replayed.status_code, replayed.json()["code"]) == (401, "invalid_signature")
    assert InboundEvent.objects.filter(module=module).count() == 1
