"""Exporting the audit log for inspection: JSON Lines or CSV, streamed in constant memory.

Used by `manage.py export_audit` and the staff download (`audit.views`). Rows
are read as tuples through a server-side cursor inside one transaction (one
snapshot, no cursor materialised on the server) and written out in batches, so
an export of any size holds one batch in memory.

Every export has the same columns in the same order (COLUMNS): the hashed
fields, `prev_hash` and `hash`, then the payload. Ids, amounts ("12.50") and
UTC ISO 8601 timestamps are written exactly as `audit.chain.canonical` renders
them, so an inspector can re-check the chain from a JSON Lines file alone.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import islice

from django.db import transaction
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from audit.actors import Actor
from audit.chain import HASHED_FIELDS
from audit.models import AuditEvent, EventType
from audit.services import audit_record
from audit.verify import EpochMicroseconds, from_epoch_microseconds

# The payload comes last so a JSON line can carry PostgreSQL's JSON text as it is.
COLUMNS = (*(f for f in HASHED_FIELDS if f != "payload"), "prev_hash", "hash", "payload")
ACTOR_KINDS = ("staff", "patient", "system", "provider")
CHUNK_SIZE = 2000  # rows per server-side fetch and per yielded chunk

# Free-text columns a spreadsheet could take for a formula (OWASP "CSV injection").
_TEXT_COLUMNS = (
    "event_type",
    "actor_kind",
    "actor_id",
    "actor_label",
    "subject_type",
    "subject_id",
    "currency",
    "method",
    "target_type",
    "target_id",
    "provider_reference",
    "from_state",
    "to_state",
    "reason_code",
    "approver_id",
    "approver_label",
    "mandate_reference",
    "request_id",
)
_FORMULA_START = frozenset("=+-@\t\r")


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


CONTENT_TYPES = {
    ExportFormat.JSONL: "application/x-ndjson; charset=utf-8",
    ExportFormat.CSV: "text/csv; charset=utf-8",
}


class ExportFilterError(ValueError):
    """A filter value that cannot be used; `field` names the offending parameter."""

    code = "invalid_filter"

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field}


@dataclass(frozen=True)
class ExportFilters:
    """What to export. Empty `practice_ids` means every practice: callers scope it first."""

    practice_ids: tuple[uuid.UUID, ...] = ()
    site_id: uuid.UUID | None = None
    since: datetime | None = None  # inclusive, UTC
    until: datetime | None = None  # exclusive, UTC
    actor_kind: str = ""
    actor_id: str = ""
    event_types: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        practice: Iterable[str] = (),
        site: str | None = None,
        since: str | None = None,
        until: str | None = None,
        actor: str | None = None,
        event_type: Iterable[str] = (),
    ) -> ExportFilters:
        """Filters from user-supplied strings; raises ExportFilterError naming the field."""
        practice_ids = tuple(dict.fromkeys(_uuid(p, "practice") for p in practice if p))
        site_id = _uuid(site, "site") if site else None
        since_at = _moment(since, "since", end_of_day=False) if since else None
        until_at = _moment(until, "until", end_of_day=True) if until else None
        if since_at and until_at and since_at >= until_at:
            raise ExportFilterError("'since' must be before 'until'.", field="until")
        actor_kind, actor_id = _actor(actor) if actor else ("", "")
        types = tuple(dict.fromkeys(t.strip() for t in event_type if t.strip()))
        for name in types:
            if name not in EventType.values:
                raise ExportFilterError(f"Unknown event type {name!r}.", field="event_type")
        return cls(
            practice_ids=practice_ids,
            site_id=site_id,
            since=since_at,
            until=until_at,
            actor_kind=actor_kind,
            actor_id=actor_id,
            event_types=types,
        )

    @classmethod
    def from_query(cls, params: Mapping[str, list[str]]) -> ExportFilters:
        """Filters from a multi-valued mapping such as `dict(request.GET.lists())`."""

        def one(name: str) -> str | None:
            values = params.get(name) or []
            if len(values) > 1:
                raise ExportFilterError(f"Give '{name}' at most once.", field=name)
            return values[0] if values else None

        return cls.parse(
            practice=params.get("practice") or [],
            site=one("site"),
            since=one("since"),
            until=one("until"),
            actor=one("actor"),
            event_type=params.get("event_type") or [],
        )

    def describe(self) -> dict:
        """The filters as JSON values, for the audit record of an export."""
        return {
            "practice_ids": [str(p) for p in self.practice_ids],
            "site_id": str(self.site_id) if self.site_id else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "actor_kind": self.actor_kind,
            "actor_id": self.actor_id,
            "event_types": list(self.event_types),
        }


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise ExportFilterError(f"{value!r} is not a valid id.", field=field) from None


def _moment(value: str, field: str, *, end_of_day: bool) -> datetime:
    """An ISO 8601 date or date-time; naive means UTC. A bare `until` date includes that day."""
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ExportFilterError(
            f"{value!r} is not an ISO 8601 date or date-time.", field=field
        ) from None


def _actor(value: str) -> tuple[str, str]:
    kind, _, actor_id = value.strip().partition(":")
    if kind not in ACTOR_KINDS:
        raise ExportFilterError(
            f"Actor must be KIND or KIND:ID, KIND one of {', '.join(ACTOR_KINDS)}.",
            field="actor",
        )
    return kind, actor_id


def filtered_events(filters: ExportFilters | None = None) -> QuerySet:
    """The audit events matching `filters`, in chain order (practice, seq)."""
    filters = filters or ExportFilters()
    events = AuditEvent.objects.all()
    if filters.practice_ids:
        events = events.filter(practice_id__in=filters.practice_ids)
    if filters.site_id:
        events = events.filter(site_id=filters.site_id)
    if filters.since:
        events = events.filter(occurred_at__gte=filters.since)
    if filters.until:
        events = events.filter(occurred_at__lt=filters.until)
    if filters.actor_kind:
        events = events.filter(actor_kind=filters.actor_kind)
    if filters.actor_id:
        events = events.filter(actor_id=filters.actor_id)
    if filters.event_types:
        events = events.filter(event_type__in=filters.event_types)
    return events.order_by("practice_id", "seq")


def audit_export_record(*, actor: Actor, filters: ExportFilters, fmt: ExportFormat | str) -> None:
    """Record an export (one AUDIT_EXPORTED event per practice) before the file is streamed."""
    fmt = ExportFormat(fmt)
    with transaction.atomic():
        for practice_id in sorted(filters.practice_ids):  # chain heads locked in one order
            audit_record(
                event_type=EventType.AUDIT_EXPORTED,
                practice_id=practice_id,
                actor=actor,
                site_id=filters.site_id,
                subject_type="audit_export",
                payload={"format": fmt.value, "filters": filters.describe()},
            )


def export_chunks(events: QuerySet, *, fmt: ExportFormat | str) -> Iterator[bytes]:
    """The export file as UTF-8 byte chunks (CHUNK_SIZE rows each), read lazily."""
    fmt = ExportFormat(fmt)  # a bad format fails here, not at the first chunk
    return _in_transaction(_csv_chunks if fmt is ExportFormat.CSV else _jsonl_chunks, events)


def _in_transaction(chunks, events: QuerySet) -> Iterator[bytes]:
    # Inside a transaction the server-side cursor is a plain one (not WITH HOLD,
    # which PostgreSQL materialises in full first) and the file is one snapshot.
    with transaction.atomic():
        yield from chunks(events)


# Columns are read in the form they are written in: ids and the amount as
# PostgreSQL text, occurred_at as integer microseconds (made into the same ISO
# 8601 string the hash covers), the payload as JSON text. No UUID, Decimal or
# dict per cell, which halves the cost of a row.
_OCCURRED = COLUMNS.index("occurred_at")
_AS_TEXT = ("event_id", "practice_id", "site_id", "terminal_id", "payment_id", "amount", "payload")
_READ_AS = {f"{name}_as_text": Cast(name, TextField()) for name in _AS_TEXT} | {
    "occurred_at_us": EpochMicroseconds("occurred_at")
}
_SELECT = tuple(
    f"{name}_as_text" if name in _AS_TEXT else "occurred_at_us" if name == "occurred_at" else name
    for name in COLUMNS
)


def _batches(events: QuerySet) -> Iterator[list[list]]:
    """Rows as lists in COLUMNS order with occurred_at as ISO 8601 UTC, CHUNK_SIZE at a time."""
    rows = events.annotate(**_READ_AS).values_list(*_SELECT).iterator(chunk_size=CHUNK_SIZE)
    occurred = _OCCURRED
    while batch := [list(row) for row in islice(rows, CHUNK_SIZE)]:
        for cells in batch:
            cells[occurred] = from_epoch_microseconds(cells[occurred]).isoformat()
        yield batch


def _jsonl_chunks(events: QuerySet) -> Iterator[bytes]:
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    columns = COLUMNS[:-1]
    for batch in _batches(events):
        # {...every column but the payload...,"payload":<the stored JSON>}
        lines = [
            f'{encode(dict(zip(columns, cells, strict=False)))[:-1]},"payload":{cells[-1]}}}'
            for cells in batch
        ]
        lines.append("")
        yield "\n".join(lines).encode()


def _csv_chunks(events: QuerySet) -> Iterator[bytes]:
    text = [COLUMNS.index(c) for c in _TEXT_COLUMNS]
    risky = _FORMULA_START
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for batch in _batches(events):
        for cells in batch:
            for index in text:
                value = cells[index]
                if value and value[0] in risky:
                    cells[index] = "'" + value
        writer.writerows(batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # no rows: the header alone
        yield buffer.getvalue().encode()


def content_type(fmt: ExportFormat | str) -> str:
    return CONTENT_TYPES[ExportFormat(fmt)]


def export_filename(fmt: ExportFormat | str, *, now: datetime) -> str:
    return f"audit-export-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{ExportFormat(fmt).value}"
