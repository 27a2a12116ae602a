"""System-initiated card-on-file payments are charged at DNA with their payment profile, once."""

from __future__ import annotations

from decimal import Decimal

from audit.actors import Actor
from payments.models import PaymentState, ProviderOperation
from tests.payments.helpers import new_payment

S = PaymentState
TRIGGER = Actor.system("smart_treatment_proposals")


def _charge(practice, site, patient, profile, capture):
    with capture(execute=True):
        payment = new_payment(
            TRIGGER,
            practice,
            site,
            patient,
            method="card_on_file",
            amount="250.00",
            target_type="deposit",
            target_id="DEP-9",
            payment_profile_id=profile,
        )
    payment.refresh_from_db()
    return payment


def test_stored_card_is_charged_once_and_captured(
    dna, practice, site, patient, django_capture_on_commit_callbacks
):
    payment = _charge(
        practice, site, patient, "tok_profile_123", django_capture_on_commit_callbacks
    )
    assert payment.state == S.CAPTURED and payment.captured_amount == Decimal("250.00")
    [call] = [
        r
        for r in dna.requests("/transaction/operation/stored-card-charge")
        if r["method"] == "POST"
    ]
    # The simulator's request log redacts the token itself; it was sent.
    assert call["body"]["cardTokenId"] == "[redacted]" and call["body"]["invoiceId"] == str(
        payment.id
    )
    assert call["headers"]["idempotency-key"] == f"pay:{payment.id}:card_on_file_charge"
    op = ProviderOperation.objects.get(payment=payment)
    assert (op.operation, op.status) == ("card_on_file_charge", "succeeded")
    [transaction] = dna.transactions(str(payment.id))
    assert transaction["status"] == "CHARGE"


def test_declined_stored_card_fails_with_a_retry_path(
    dna, practice, site, patient, django_capture_on_commit_callbacks
):
    payment = _charge(practice, site, patient, "tok_decline_me", django_capture_on_commit_callbacks)
    assert payment.state == S.FAILED and payment.failure_code == "declined"


def test_unknown_outcome_is_resent_with_the_same_key_and_charges_once(
    dna, practice, site, patient, django_capture_on_commit_callbacks
):
    from integrations.dna.operations import execute

    dna.fault("/transaction/operation/stored-card-charge", "500")
    payment = _charge(
        practice, site, patient, "tok_profile_456", django_capture_on_commit_callbacks
    )
    assert payment.state == S.INITIATED  # no guess
    op = ProviderOperation.objects.get(payment=payment)
    assert op.status == "pending"
    execute(op.pk)  # what the sweep does
    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    assert len(dna.transactions(str(payment.id))) == 1
