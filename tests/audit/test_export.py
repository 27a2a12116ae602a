"""Export: JSON Lines and CSV content, every filter, CSV formula protection, manage.py export_audit."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from audit.actors import Actor
from audit.chain import HASHED_FIELDS, chain_hash
from audit.export import (
    COLUMNS,
    ExportFilterError,
    ExportFilters,
    export_chunks,
    filtered_events,
)
from audit.models import EventType
from tests.audit.helpers import record_events
from tests.factories import PracticeFactory, SiteFactory

STAFF = Actor(kind="staff", id="7", label="Sam Staff")
PATIENT = Actor(kind="patient", id="p-1", label="patient-self-serve")


@pytest.fixture
def events(practice, site, other_site):
    """Practice: 3 staff events at `site`, 2 patient refunds at `other_site`; plus another practice."""
    first = record_events(practice, 3, site=site, actor=STAFF)
    second = record_events(
        practice, 2, site=other_site, actor=PATIENT, event_type=EventType.PAYMENT_REFUNDED
    )
    other = PracticeFactory()
    record_events(other, 2, site=SiteFactory(practice=other))
    return first + second


def _jsonl(filters=None) -> list[dict]:
    data = b"".join(export_chunks(filtered_events(filters), fmt="jsonl"))
    return [json.loads(line) for line in data.decode().splitlines()]


def _csv(filters=None) -> list[list[str]]:
    data = b"".join(export_chunks(filtered_events(filters), fmt="csv"))
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _seqs(filters: ExportFilters) -> list[int]:
    return [line["seq"] for line in _jsonl(filters)]


def test_jsonl_lines_carry_every_column_as_hashed(events, practice):
    lines = _jsonl(ExportFilters(practice_ids=(practice.id,)))

    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
    first, event = lines[0], events[0]
    assert list(first) == list(COLUMNS)
    assert first["event_id"] == str(event.event_id)
    assert first["practice_id"] == str(practice.id)
    assert first["occurred_at"] == event.occurred_at.isoformat()
    assert first["occurred_at"].endswith("+00:00")
    assert first["amount"] == "10.00"
    assert first["payload"] == {"n": 0, "note": "née €"}
    assert first["actor_kind"] == "staff" and first["actor_label"] == "Sam Staff"
    assert first["terminal_id"] is None
    assert first["hash"] == event.hash
    # The file alone is enough to re-check each event's hash.
    for line in lines:
        assert chain_hash(line["prev_hash"], [line[f] for f in HASHED_FIELDS]) == line["hash"]


def test_csv_has_a_fixed_header_and_json_payload(events, practice):
    header, *rows = _csv(ExportFilters(practice_ids=(practice.id,)))

    assert header == list(COLUMNS)
    assert len(rows) == 5
    first = dict(zip(header, rows[0], strict=True))
    assert first["seq"] == "1"
    assert first["amount"] == "10.00"
    assert first["occurred_at"] == events[0].occurred_at.isoformat()
    assert first["terminal_id"] == ""
    assert json.loads(first["payload"]) == {"n": 0, "note": "née €"}
    assert first["hash"] == events[0].hash


def test_csv_cells_that_could_be_formulas_are_quoted_jsonl_keeps_them(practice):
    record_events(
        practice,
        1,
        actor=Actor(kind="staff", id="@SUM(A1)", label='=HYPERLINK("http://x","y")'),
        provider_reference="-2+3",
    )
    record_events(practice, 1, actor=STAFF, provider_reference="+44 20")

    header, *rows = _csv()
    cells = [dict(zip(header, row, strict=True)) for row in rows]

    assert cells[0]["actor_label"] == '\'=HYPERLINK("http://x","y")'
    assert cells[0]["actor_id"] == "'@SUM(A1)"
    assert cells[0]["provider_reference"] == "'-2+3"
    assert cells[1]["provider_reference"] == "'+44 20"
    assert cells[1]["actor_label"] == "Sam Staff"
    assert _jsonl()[0]["actor_label"] == '=HYPERLINK("http://x","y")'


def test_empty_export_is_a_csv_header_and_an_empty_jsonl(db):
    assert _csv() == [list(COLUMNS)]
    assert _jsonl() == []


def test_filter_by_practice_and_site(events, practice, site, other_site):
    assert _seqs(ExportFilters(practice_ids=(practice.id,), site_id=site.id)) == [1, 2, 3]
    assert _seqs(ExportFilters(site_id=other_site.id)) == [4, 5]
    assert len(_jsonl()) == 7  # no practice filter: every practice (command line)


def test_filter_by_time_range(events, practice):
    only = (practice.id,)
    since = ExportFilters(practice_ids=only, since=events[2].occurred_at)
    until = ExportFilters(practice_ids=only, until=events[2].occurred_at)
    both = ExportFilters(
        practice_ids=only, since=events[1].occurred_at, until=events[3].occurred_at
    )
    assert _seqs(since) == [3, 4, 5]
    assert _seqs(until) == [1, 2]
    assert _seqs(both) == [2, 3]


def test_bare_until_date_includes_that_day(events, practice):
    day = events[0].occurred_at.date().isoformat()
    filters = ExportFilters.parse(practice=[str(practice.id)], since=day, until=day)
    assert filters.until - filters.since == timedelta(days=1)
    assert _seqs(filters) == [1, 2, 3, 4, 5]


def test_filter_by_actor_kind_and_id(events, practice):
    assert _seqs(ExportFilters.parse(practice=[str(practice.id)], actor="patient")) == [4, 5]
    assert _seqs(ExportFilters.parse(practice=[str(practice.id)], actor="staff:7")) == [1, 2, 3]
    assert _seqs(ExportFilters.parse(practice=[str(practice.id)], actor="staff:8")) == []


def test_filter_by_event_types(events, practice):
    refunds = ExportFilters.parse(practice=[str(practice.id)], event_type=["payment.refunded"])
    both = ExportFilters.parse(
        practice=[str(practice.id)], event_type=["payment.refunded", "payment.state_changed"]
    )
    assert _seqs(refunds) == [4, 5]
    assert _seqs(both) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"practice": ["nope"]}, "practice"),
        ({"site": "123"}, "site"),
        ({"since": "yesterday"}, "since"),
        ({"until": "9999-12-31"}, "until"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "until"),
        ({"actor": "robot:1"}, "actor"),
        ({"event_type": ["payment.exploded"]}, "event_type"),
    ],
)
def test_bad_filter_values_name_their_field(given, field):
    with pytest.raises(ExportFilterError) as error:
        ExportFilters.parse(**given)
    assert error.value.field == field
    assert error.value.as_dict()["code"] == "invalid_filter"


def test_naive_times_are_utc_and_offsets_are_converted():
    filters = ExportFilters.parse(since="2026-01-01T10:00", until="2026-01-01T13:00+02:00")
    assert filters.since.isoformat() == "2026-01-01T10:00:00+00:00"
    assert filters.until.isoformat() == "2026-01-01T11:00:00+00:00"


def test_export_chunks_refuses_an_unknown_format(db):
    with pytest.raises(ValueError, match="xml"):
        export_chunks(filtered_events(), fmt="xml")


# --- manage.py export_audit ---


def test_command_writes_a_filtered_file(events, practice, site, tmp_path):
    target = tmp_path / "audit.csv"
    call_command(
        "export_audit",
        "--format=csv",
        f"--practice={practice.id}",
        f"--site={site.id}",
        "--actor=staff:7",
        "--event-type=payment.state_changed",
        f"--output={target}",
        stderr=io.StringIO(),
    )
    header, *rows = list(csv.reader(target.open(newline="")))
    assert header == list(COLUMNS)
    assert [row[COLUMNS.index("seq")] for row in rows] == ["1", "2", "3"]


def test_command_streams_jsonl_to_stdout(events, practice, capsysbinary):
    call_command(
        "export_audit",
        "--format=jsonl",
        f"--practice={practice.id}",
        f"--since={events[3].occurred_at.isoformat()}",
        stderr=io.StringIO(),
    )
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [4, 5]


def test_command_reports_a_bad_filter(db):
    with pytest.raises(CommandError, match="--event-type"):
        call_command("export_audit", "--format=csv", "--event-type=nope")
