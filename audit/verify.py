"""Checking the audit hash chains: finds a change made behind the database's back.

The append-only trigger stops the application and anyone using plain SQL; this
catches what it cannot (the trigger disabled by a superuser, a restored dump
edited). Each practice's chain is walked in `seq` order and every row must
(1) follow its predecessor without a gap, (2) name its predecessor's hash as
`prev_hash`, and (3) hash, with `audit.chain.chain_hash`, to its stored `hash`.
The chain head must end where the rows end, so a deleted tail is found too.

Rows are read as plain tuples through a server-side cursor, so memory stays
flat and there is no model instance per row. Hashing is CPU-bound Python, so
with `workers > 1` a long chain is cut into seq ranges walked by worker
processes; joining the ranges (each one's first `prev_hash` must be the previous
one's last `hash`) gives exactly the result of a single walk.
"""

from __future__ import annotations

import json
import multiprocessing
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from django.db import connection, connections, transaction
from django.db.models import BigIntegerField, Func, TextField
from django.db.models.functions import Cast

from audit.chain import GENESIS_HASH, HASHED_FIELDS, chain_hash
from audit.models import AuditChainHead, AuditEvent
from practices.models import Practice

CHUNK_SIZE = 5000  # rows per server-side fetch
RANGE_SIZE = 50_000  # events per task when verifying with worker processes

_WIDTH = len(HASHED_FIELDS)
_SEQ = HASHED_FIELDS.index("seq")
_EVENT_ID = HASHED_FIELDS.index("event_id")
_OCCURRED = HASHED_FIELDS.index("occurred_at")
_PAYLOAD = HASHED_FIELDS.index("payload")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EpochMicroseconds(Func):
    """A timestamptz as integer microseconds since 1970, exact (EXTRACT is numeric on PG 14+).

    psycopg turns a bigint into an int in C, where Django's timestamptz loader
    is pure Python; `from_epoch_microseconds` gives back the same aware datetime.
    """

    template = "(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint"
    output_field = BigIntegerField()

    def get_db_converters(self, connection):
        return self.output_field.get_db_converters(connection)  # already an int: no int() per row


def from_epoch_microseconds(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


# Some columns are read in a cheaper form that gives `canonical` the same input:
# UUIDs as PostgreSQL's text (what `canonical` makes of a uuid.UUID anyway),
# occurred_at as integer microseconds turned back into the same aware UTC
# datetime (Django's timestamptz loader is pure Python), and the payload as
# JSON text decoded here rather than by a per-row Django converter. Together
# they take about a third off each row; tests/audit/test_verify.py verifies
# events written by audit_record through this path.
_UUID_COLUMNS = ("event_id", "practice_id", "site_id", "terminal_id", "payment_id")
_READ_AS = {f"{name}_as_text": Cast(name, TextField()) for name in (*_UUID_COLUMNS, "payload")}
_READ_AS["occurred_at_us"] = EpochMicroseconds("occurred_at")
_ALIASES = {name: f"{name}_as_text" for name in (*_UUID_COLUMNS, "payload")}
_ALIASES["occurred_at"] = "occurred_at_us"
_SELECT = (*(_ALIASES.get(name, name) for name in HASHED_FIELDS), "prev_hash", "hash")


class BreakReason(StrEnum):
    HASH_MISMATCH = "hash_mismatch"  # the row's content no longer hashes to its stored hash
    PREV_HASH_MISMATCH = "prev_hash_mismatch"  # the row does not point at its predecessor
    SEQ_GAP = "seq_gap"  # a row is missing (in the middle, or at the tail per the chain head)
    HEAD_MISMATCH = "head_mismatch"  # the chain head disagrees with the rows


_HASH_DETAIL = "the event's content does not match its stored hash"
_PREV_DETAIL = "prev_hash does not match the previous event's hash"


@dataclass(frozen=True)
class VerifyResult:
    """One practice's chain; `events_checked` counts the events verified before any break."""

    practice_id: uuid.UUID
    events_checked: int
    broken_seq: int | None = None
    event_id: uuid.UUID | None = None
    reason: BreakReason | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class _Break:
    seq: int
    event_id: str | None
    reason: BreakReason
    detail: str


@dataclass(frozen=True)
class _Span:
    """What a walk over seqs first..last found; picklable, so workers can return it."""

    first: int
    last: int
    first_prev: str | None  # the first row's prev_hash (None if the span has no rows)
    first_event_id: str | None
    last_hash: str | None
    last_event_id: str | None
    broken: _Break | None


def _walk(practice_id: str, first: int, last: int, head_seq: int) -> _Span:
    """Check rows first..last of one chain: seqs contiguous, links inside the span, hashes.

    The link into the span (its first prev_hash) is checked by `_join`.
    """
    rows = (
        AuditEvent.objects.filter(practice_id=practice_id, seq__gte=first, seq__lte=last)
        .annotate(**_READ_AS)
        .order_by("seq")
        .values_list(*_SELECT)
    )
    with transaction.atomic():  # a plain server-side cursor, not one PostgreSQL materialises
        return _check(rows.iterator(chunk_size=CHUNK_SIZE), first, last, head_seq)


def _check(rows: Iterator[tuple], first: int, last: int, head_seq: int) -> _Span:
    expected = first
    first_prev = first_event_id = prev = event_id = None
    broken = None
    for row in rows:
        seq = row[_SEQ]
        event_id = row[_EVENT_ID]
        stored_prev = row[_WIDTH]
        if seq != expected:
            detail = f"seq {expected} is missing; the next event is seq {seq}"
            broken = _Break(expected, event_id, BreakReason.SEQ_GAP, detail)
            break
        if prev is None:
            first_prev, first_event_id = stored_prev, event_id
        elif stored_prev != prev:
            broken = _Break(seq, event_id, BreakReason.PREV_HASH_MISMATCH, _PREV_DETAIL)
            break
        prev = row[_WIDTH + 1]
        values = list(row[:_WIDTH])
        values[_OCCURRED] = from_epoch_microseconds(values[_OCCURRED])
        values[_PAYLOAD] = json.loads(values[_PAYLOAD])
        if chain_hash(stored_prev, values) != prev:
            broken = _Break(seq, event_id, BreakReason.HASH_MISMATCH, _HASH_DETAIL)
            break
        expected += 1
    else:
        if expected <= last:
            missing = f"seq {expected}" if expected == last else f"seqs {expected}..{last}"
            detail = f"{missing} missing; the chain head is at seq {head_seq}"
            broken = _Break(expected, None, BreakReason.SEQ_GAP, detail)
    return _Span(first, last, first_prev, first_event_id, prev, event_id, broken)


def _walk_in_worker(task: tuple[str, int, int, int]) -> _Span:
    try:
        return _walk(*task)
    finally:
        connections.close_all()  # this worker's own connection; the pool may end it any time


def _result(practice_id: uuid.UUID, broken: _Break) -> VerifyResult:
    return VerifyResult(
        practice_id=practice_id,
        events_checked=max(broken.seq - 1, 0),
        broken_seq=broken.seq,
        event_id=uuid.UUID(broken.event_id) if broken.event_id else None,
        reason=broken.reason,
        detail=broken.detail,
    )


def _join(practice_id: uuid.UUID, head: tuple[int, str], spans: list[_Span]) -> VerifyResult:
    """One result from a chain's consecutive spans, exactly as a single walk reports it."""
    head_seq, head_hash = head
    prev_hash = GENESIS_HASH
    last_event_id = None
    for span in spans:
        broken = span.broken
        gap_first = (
            broken is not None and broken.seq == span.first and broken.reason is BreakReason.SEQ_GAP
        )
        if not gap_first and span.first_prev != prev_hash:
            link = _Break(
                span.first, span.first_event_id, BreakReason.PREV_HASH_MISMATCH, _PREV_DETAIL
            )
            return _result(practice_id, link)
        if broken is not None:
            return _result(practice_id, broken)
        prev_hash, last_event_id = span.last_hash, span.last_event_id
    if prev_hash != head_hash:
        head_break = _Break(
            head_seq,
            last_event_id,
            BreakReason.HEAD_MISMATCH,
            "the chain head's hash differs from the last event's hash",
        )
        return _result(practice_id, head_break)
    return VerifyResult(practice_id=practice_id, events_checked=head_seq)


def practice_ids_to_verify() -> list[uuid.UUID]:
    return list(Practice.objects.order_by("id").values_list("id", flat=True))


def verify_chain(practice_id, *, workers: int = 1) -> VerifyResult:
    """Walk one practice's chain up to its head and report the first broken link."""
    return verify_all([practice_id], workers=workers)[0]


def verify_all(
    practice_ids: Iterable | None = None, *, workers: int = 1, range_size: int = RANGE_SIZE
) -> list[VerifyResult]:
    """Verify every practice's chain (or the given ones), one result per practice, in order.

    Only events up to each chain head (read first) are walked, so events
    appended meanwhile wait for the next run instead of looking like a break.
    `workers > 1` walks `range_size` events per task in worker processes with
    their own connections; they cannot see uncommitted rows, so inside a
    transaction the walk stays in this process.
    """
    if practice_ids is None:
        ids = practice_ids_to_verify()
    else:
        ids = [uuid.UUID(str(p)) for p in practice_ids]
    heads = {
        practice_id: (seq, last_hash)
        for practice_id, seq, last_hash in AuditChainHead.objects.filter(
            practice_id__in=ids
        ).values_list("practice_id", "seq", "last_hash")
    }
    strays = _first_events_without_head([p for p in ids if p not in heads])
    size = range_size if workers > 1 else None
    tasks = []
    for practice_id, (head_seq, _) in heads.items():
        step = size or max(head_seq, 1)
        for first in range(1, head_seq + 1, step):
            tasks.append((str(practice_id), first, min(first + step - 1, head_seq), head_seq))
    spans_by_practice: dict[uuid.UUID, list[_Span]] = {p: [] for p in heads}
    for span, task in zip(_run(tasks, workers), tasks, strict=True):
        spans_by_practice[uuid.UUID(task[0])].append(span)

    results = []
    for practice_id in ids:
        if practice_id in heads:
            results.append(_join(practice_id, heads[practice_id], spans_by_practice[practice_id]))
        elif practice_id in strays:
            seq, event_id = strays[practice_id]
            detail = "events exist but the practice has no chain head"
            broken = _Break(seq, str(event_id), BreakReason.HEAD_MISMATCH, detail)
            results.append(_result(practice_id, broken))
        else:
            results.append(VerifyResult(practice_id=practice_id, events_checked=0))
    return results


def _first_events_without_head(practice_ids: list[uuid.UUID]) -> dict:
    if not practice_ids:
        return {}
    firsts = (
        AuditEvent.objects.filter(practice_id__in=practice_ids)
        .order_by("practice_id", "seq")
        .distinct("practice_id")
        .values_list("practice_id", "seq", "event_id")
    )
    return {practice_id: (seq, event_id) for practice_id, seq, event_id in firsts}


def _run(tasks: list[tuple[str, int, int, int]], workers: int) -> list[_Span]:
    if workers <= 1 or len(tasks) <= 1 or connection.in_atomic_block:
        return [_walk(*task) for task in tasks]
    connections.close_all()  # forked workers must not share this process's connection
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_walk_in_worker, tasks))
