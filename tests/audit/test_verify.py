"""verify_chain / verify_all / manage.py verify_audit: a valid chain passes, every tampering is found."""

from __future__ import annotations

import io
import json
import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from audit.actors import Actor
from audit.chain import HASHED_FIELDS, chain_hash
from audit.models import AuditChainHead, AuditEvent, EventType
from audit.services import audit_record
from audit.verify import BreakReason, verify_all, verify_chain
from tests.audit.helpers import record_events, tamper
from tests.factories import PracticeFactory, SiteFactory


@pytest.fixture
def other_practice(db):
    return PracticeFactory()


@pytest.fixture
def chain(practice, site):
    """Ten events in `practice`'s chain."""
    return record_events(practice, 10, site=site)


def test_chains_of_two_practices_verify_after_many_interleaved_events(
    practice, site, other_practice
):
    other_site = SiteFactory(practice=other_practice)
    staff = Actor(kind="staff", id="7", label="Sam Staff")
    for n in range(30):
        record_events(practice, 1, site=site, actor=staff, payload={"round": n})
        if n % 3 == 0:
            record_events(other_practice, 2, site=other_site)

    results = verify_all()

    by_practice = {r.practice_id: r for r in results}
    assert by_practice[practice.id].ok and by_practice[practice.id].events_checked == 30
    assert by_practice[other_practice.id].ok and by_practice[other_practice.id].events_checked == 20
    assert verify_chain(other_practice.id).events_checked == 20


def test_values_as_audit_record_hashed_them_verify(practice, site, terminal):
    """UUIDs, Decimal amounts, timestamps and JSON payloads read back exactly as they were hashed."""
    with transaction.atomic():
        audit_record(
            event_type=EventType.PAYMENT_PARTIALLY_REFUNDED,
            practice_id=str(practice.id),  # a str is hashed as its text, as the row reads back
            actor=Actor.provider("dna"),
            approver=Actor(kind="staff", id="9", label="Ana Approver"),
            site_id=site.id,
            terminal_id=terminal.id,
            payment_id=uuid.uuid4(),
            subject_type="refund",
            subject_id=uuid.uuid4(),
            amount=Decimal("1234.5"),
            currency="GBP",
            method="card",
            target_type="invoice",
            target_id="INV-9",
            provider_reference="dna-r-1",
            from_state="captured",
            to_state="partially_refunded",
            reason_code="customer_request",
            mandate_reference="MD-1",
            payload={
                "refund": Decimal("0.10"),
                "zeta": [1, 2.5, None, True, "ü"],
                "alpha": {"nested": {"b": 1, "a": 2}},
                "at": practice.created_at,
            },
        )
        audit_record(
            event_type=EventType.PAYMENT_VOIDED,
            practice_id=practice.id,
            actor=Actor.system("janitor"),
            amount=None,
        )

    result = verify_chain(practice.id)

    assert result.ok, result
    assert result.events_checked == 2


def test_events_written_by_the_payment_services_verify(
    practice, site, patient, terminal, reception_actor, provider_actor
):
    from tests.payments.helpers import captured

    captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    written = AuditEvent.objects.filter(practice=practice).count()

    result = verify_chain(practice.id)

    assert written >= 2
    assert result.ok and result.events_checked == written


def test_changed_payload_is_a_hash_mismatch_at_that_seq(chain, practice, other_practice):
    record_events(other_practice, 3)
    target = chain[4]
    tamper(
        "UPDATE audit_auditevent SET payload = %s::jsonb WHERE id = %s", ['{"n": 99}', target.pk]
    )

    result = verify_chain(practice.id)

    assert (result.ok, result.broken_seq, result.reason) == (False, 5, BreakReason.HASH_MISMATCH)
    assert result.event_id == target.event_id and result.events_checked == 4
    assert verify_chain(other_practice.id).ok


def test_changed_amount_is_a_hash_mismatch_at_that_seq(chain, practice):
    tamper("UPDATE audit_auditevent SET amount = amount + 0.01 WHERE id = %s", [chain[7].pk])

    result = verify_chain(practice.id)

    assert (result.broken_seq, result.reason, result.event_id) == (
        8,
        BreakReason.HASH_MISMATCH,
        chain[7].event_id,
    )


def test_deleted_middle_row_is_a_seq_gap(chain, practice):
    tamper("DELETE FROM audit_auditevent WHERE id = %s", [chain[5].pk])

    result = verify_chain(practice.id)

    assert (result.broken_seq, result.reason) == (6, BreakReason.SEQ_GAP)
    assert result.event_id == chain[6].event_id  # the event found where seq 6 should be
    assert result.events_checked == 5


def test_deleted_tail_row_is_found_through_the_chain_head(chain, practice):
    tamper("DELETE FROM audit_auditevent WHERE id = %s", [chain[-1].pk])

    result = verify_chain(practice.id)

    assert (result.broken_seq, result.reason, result.event_id) == (10, BreakReason.SEQ_GAP, None)
    assert "chain head is at seq 10" in result.detail


def test_rewritten_row_with_a_recomputed_hash_breaks_the_next_link(chain, practice):
    target = chain[2]
    values = list(AuditEvent.objects.filter(pk=target.pk).values_list(*HASHED_FIELDS).get())
    values[HASHED_FIELDS.index("reason_code")] = "forged"
    forged_hash = chain_hash(target.prev_hash, values)
    tamper(
        "UPDATE audit_auditevent SET reason_code = 'forged', hash = %s WHERE id = %s",
        [forged_hash, target.pk],
    )

    result = verify_chain(practice.id)

    assert (result.broken_seq, result.reason, result.event_id) == (
        4,
        BreakReason.PREV_HASH_MISMATCH,
        chain[3].event_id,
    )


def test_chain_head_out_of_step_with_the_last_row_is_found(chain, practice):
    AuditChainHead.objects.filter(practice=practice).update(last_hash="f" * 64)

    result = verify_chain(practice.id)

    assert (result.broken_seq, result.reason) == (10, BreakReason.HEAD_MISMATCH)
    assert result.event_id == chain[-1].event_id


def test_events_without_a_chain_head_are_a_break(chain, practice):
    AuditChainHead.objects.filter(practice=practice).delete()

    result = verify_chain(practice.id)

    assert (result.broken_seq, result.reason) == (1, BreakReason.HEAD_MISMATCH)


def test_practice_without_events_is_an_empty_valid_chain(other_practice):
    result = verify_chain(other_practice.id)
    assert result.ok and result.events_checked == 0


# --- manage.py verify_audit ---


def test_command_prints_each_chain_and_the_rate(chain, practice, other_practice):
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    text = out.getvalue()
    assert f"practice {practice.id}: OK, 10 events verified" in text
    assert f"practice {other_practice.id}: OK, 0 events verified" in text
    assert "All chains OK: 2 chains, 10 events" in text and "events/s" in text


def test_command_fails_at_the_first_broken_link_naming_it(chain, practice):
    tamper("UPDATE audit_auditevent SET payload = '{}'::jsonb WHERE id = %s", [chain[2].pk])

    with pytest.raises(CommandError) as failure:
        call_command("verify_audit", "--practice", str(practice.id), stdout=io.StringIO())

    message = str(failure.value)
    assert f"practice {practice.id}" in message and "seq 3" in message
    assert str(chain[2].event_id) in message and "hash_mismatch" in message


def test_command_rejects_a_bad_practice_id(db):
    with pytest.raises(CommandError, match="UUID"):
        call_command("verify_audit", "--practice", "not-a-uuid")


# --- worker processes give exactly the single-walk result ---


@pytest.fixture
def committed_chain(transactional_db):
    """25 committed events (worker processes cannot see uncommitted ones)."""
    practice = PracticeFactory()
    return practice, record_events(practice, 25)


@pytest.mark.parametrize(
    ("sql", "index", "expected"),
    [
        (None, None, (True, None, None)),
        ("DELETE FROM audit_auditevent WHERE id = %s", 10, (False, 11, BreakReason.SEQ_GAP)),
        ("DELETE FROM audit_auditevent WHERE id = %s", 24, (False, 25, BreakReason.SEQ_GAP)),
        (
            "UPDATE audit_auditevent SET payload = '{}'::jsonb WHERE id = %s",
            5,
            (False, 6, BreakReason.HASH_MISMATCH),
        ),
        (
            "UPDATE audit_auditevent SET hash = repeat('0', 64) WHERE id = %s",
            9,
            (False, 10, BreakReason.HASH_MISMATCH),
        ),
    ],
    ids=["intact", "span-first-deleted", "tail-deleted", "span-first-changed", "span-last-hash"],
)
def test_worker_processes_report_what_a_single_walk_reports(committed_chain, sql, index, expected):
    practice, events = committed_chain
    if sql:
        tamper(sql, [events[index].pk])

    parallel = verify_all([practice.id], workers=2, range_size=5)[0]
    single = verify_all([practice.id], workers=1)[0]

    assert parallel == single
    assert (parallel.ok, parallel.broken_seq, parallel.reason) == expected


def test_worker_processes_find_a_broken_link_between_spans(committed_chain):
    """Row 10 rewritten with a valid hash of its own: only the join of spans 6-10 and 11-15 sees it."""
    practice, events = committed_chain
    values = list(AuditEvent.objects.filter(pk=events[9].pk).values_list(*HASHED_FIELDS).get())
    values[HASHED_FIELDS.index("payload")] = {"x": 1}
    tamper(
        "UPDATE audit_auditevent SET payload = %s::jsonb, hash = %s WHERE id = %s",
        [json.dumps({"x": 1}), chain_hash(events[9].prev_hash, values), events[9].pk],
    )

    parallel = verify_all([practice.id], workers=2, range_size=5)[0]

    assert (parallel.broken_seq, parallel.reason, parallel.event_id) == (
        11,
        BreakReason.PREV_HASH_MISMATCH,
        events[10].event_id,
    )
    assert parallel == verify_all([practice.id], workers=1)[0]
