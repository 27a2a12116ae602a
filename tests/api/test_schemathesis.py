"""Schemathesis against the live app: every operation in /api/schema/, valid and invalid input,
signed in as a patient, a staff member or the AI Guardian; no 5xx and no response outside the
schema. The inbound module triggers are called with a signature that cannot match: they must
refuse every request with a documented 4xx.

The app runs in pytest-django's live_server with the DNA simulator behind it, so "Pay now" and
terminal collections really reach a provider. Each operation is exercised three ways: generated
values (positive), deliberately invalid ones (negative), and generated requests aimed at real
records (a real balance, payment, receipt and link), so success responses are checked too. The
example budget keeps the whole test to well under two minutes.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from audit.actors import Actor
from payments import flows, services
from payments.api.tokens import staff_api_token_issue
from payments.models import PaymentMethod, ReasonCode
from tests.api.conftest import link_balance, online_balance

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
GUARDIAN_TOKEN = "schemathesis-guardian-token-0123456789"
# A well-formed signature header that matches no body: every inbound request is refused.
WRONG_SIGNATURE = {"X-Primoro-Signature": "t=1700000000,v1=" + "0" * 64}
POSITIVE_EXAMPLES = 25
NEGATIVE_EXAMPLES = 15
REAL_EXAMPLES = 10


@pytest.fixture
def records(reception_actor, manager_actor, practice, site, patient, sim_terminal):
    """Real rows for the generated requests to aim at."""
    link = link_balance(reception_actor, practice, site, patient)
    request = online_balance(reception_actor, practice, site, patient)
    # Paid in cash at the desk and partly handed back: a receipt with a refund, no provider.
    receipt = services.payment_create(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type="invoice",
        target_id="R-1",
        amount="30.00",
        method=PaymentMethod.CASH,
    )
    services.tender_record_received(payment_id=receipt.id, actor=reception_actor)
    services.refund_request(
        payment_id=receipt.id, actor=manager_actor, amount="5.00", reason_code=ReasonCode.OTHER
    )
    failed = flows.terminal_payment_start(
        actor=reception_actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type="invoice",
        target_id="INV-T",
        amount="12.00",
        terminal=sim_terminal,
    )
    services.payment_fail(
        payment_id=failed.id, actor=Actor.provider("dna"), code="declined", reason="Declined"
    )
    return {
        "balance_id": [str(link.link.payment_id), str(request.id)],
        "receipt_id": [str(receipt.id)],
        "payment_id": [str(request.id), str(failed.id), str(receipt.id)],
        "token": [link.token],
        "module": ["appointment_manager"],
        "event_type": ["deposit_requested"],
    }


def _run(
    operation, headers: dict, mode: GenerationMode, examples: int, seen: dict, **fixed
) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def check(case):
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        seen.setdefault(operation.label, set()).add(response.status_code)

    check()


def _headers_for(path: str, auth: dict[str, dict]) -> dict:
    prefix = next((p for p in auth if path.startswith(p)), "")
    return auth[prefix]


def test_the_api_keeps_to_its_schema_under_generated_requests(
    live, live_server, settings, token_for, patient, reception, records, site
):
    settings.GUARDIAN_API_TOKEN = GUARDIAN_TOKEN
    settings.GUARDIAN_SETTLE_SECONDS = 0  # the records' signals are in the feed at once
    auth = {
        "/api/v1/staff/": {
            "Authorization": f"Bearer {staff_api_token_issue(user=reception).token}"
        },
        "/api/v1/guardian/": {"Authorization": f"Bearer {GUARDIAN_TOKEN}"},
        "/api/v1/inbound/": WRONG_SIGNATURE,
        "": {"Authorization": f"Bearer {token_for(patient)}"},
    }
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    seen: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 15

    for operation in operations:
        path = operation.path
        headers = _headers_for(path, auth)
        _run(operation, headers, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, seen)
        if operation.path_parameters or operation.query or operation.body:
            # Invalid input needs something to make invalid: not every operation has it.
            _run(operation, headers, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, seen)
        names = [p.name for p in operation.path_parameters]
        for name in names:
            for value in records[name]:
                _run(
                    operation,
                    headers,
                    GenerationMode.POSITIVE,
                    REAL_EXAMPLES,
                    seen,
                    path_parameters={name: value},
                )
        if path == "/api/v1/staff/collections/":
            body = {
                "patient_id": str(patient.id),
                "site_id": str(site.id),
                "target_type": "invoice",
                "target_id": "INV-S",
                "amount": "9.99",
                "method": "pay_by_link",
            }
            _run(operation, headers, GenerationMode.POSITIVE, REAL_EXAMPLES, seen, body=body)

    # Signed in for real: every operation answered with success at least once, except the
    # inbound triggers, which refused everything (4xx, as documented) for want of a signature.
    inbound = {label for label in seen if "/api/v1/inbound/" in label}
    assert len(inbound) == 1
    (inbound_codes,) = [seen[label] for label in inbound]
    assert inbound_codes and all(400 <= code < 500 for code in inbound_codes)
    assert 401 in inbound_codes
    assert {label for label, codes in seen.items() if codes & {200, 201, 202}} == set(
        seen
    ) - inbound
    assert len(seen) == len(operations)
