"""Each audit event is also one structured log line, written only once its transaction commits."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record


def _audit_lines(buffer):
    return [json.loads(line) for line in buffer.getvalue().splitlines() if '"audit_event"' in line]


def test_committed_event_is_logged_once(practice, log_output, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        event = audit_record(
            event_type=EventType.PAYMENT_VOIDED,
            practice_id=practice.id,
            actor=Actor.system("test"),
            reason_code="other",
        )
    (line,) = _audit_lines(log_output)
    assert line["audit_event_type"] == "payment.voided"
    assert line["audit_event_id"] == str(event.event_id)
    assert line["practice_id"] == str(practice.id) and line["seq"] == event.seq
    assert line["actor"] == "system:test" and line["reason_code"] == "other"


def test_rolled_back_event_is_not_logged(practice, log_output, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        audit_record(
            event_type=EventType.PAYMENT_VOIDED,
            practice_id=practice.id,
            actor=Actor.system("test"),
        )
        raise RuntimeError("the change failed")
    assert callbacks == []
    assert _audit_lines(log_output) == []


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_is_refused(practice):
    with pytest.raises(RuntimeError):
        audit_record(
            event_type=EventType.PAYMENT_VOIDED, practice_id=practice.id, actor=Actor.system("test")
        )


def test_float_payload_values_are_kept_exactly(practice):
    from audit.verify import verify_chain

    with transaction.atomic():
        audit_record(
            event_type=EventType.OVERRIDE_APPLIED,
            practice_id=practice.id,
            actor=Actor.system("t"),
            payload={"big": 1e16, "n": [0.1]},
        )
    from audit.models import AuditEvent

    assert AuditEvent.objects.get().payload == {"big": "1e+16", "n": ["0.1"]}
    assert verify_chain(practice.id).ok
