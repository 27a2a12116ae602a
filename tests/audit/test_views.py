"""The staff download /audit/export/: §9 permission, practice and site scope, streaming, recorded."""

from __future__ import annotations

import csv
import io
import json

import pytest

from audit.export import COLUMNS
from audit.models import AuditEvent, EventType
from practices.roles import Role
from tests.audit.helpers import record_events
from tests.factories import PracticeFactory, SiteFactory, make_staff

URL = "/audit/export/"


@pytest.fixture
def other_practice(db):
    practice = PracticeFactory()
    record_events(practice, 2, site=SiteFactory(practice=practice))
    return practice


@pytest.fixture
def events(practice, site, other_site, other_practice):
    return record_events(practice, 2, site=site) + record_events(practice, 1, site=other_site)


@pytest.fixture
def compliance(practice):
    return make_staff(Role.COMPLIANCE_ADMIN, practice=practice)


def _body(response) -> bytes:
    assert response.streaming is True
    return b"".join(response.streaming_content)


def _exported(practice) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(practice=practice, event_type=EventType.AUDIT_EXPORTED))


def test_compliance_admin_downloads_only_their_practice_as_csv(
    client, compliance, practice, events, other_practice
):
    client.force_login(compliance)

    response = client.get(URL, {"format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-export-')
    assert response["Cache-Control"] == "no-store"
    header, *rows = list(csv.reader(io.StringIO(_body(response).decode(), newline="")))
    assert header == list(COLUMNS)
    practices = {row[COLUMNS.index("practice_id")] for row in rows}
    assert practices == {str(practice.id)}
    # The three events, then the record of this export (written before streaming began).
    assert [row[COLUMNS.index("seq")] for row in rows] == ["1", "2", "3", "4"]
    assert rows[-1][COLUMNS.index("event_type")] == "audit.exported"


def test_the_export_is_recorded_once_per_practice_before_streaming(
    client, compliance, practice, events, other_practice, site
):
    client.force_login(compliance)

    response = client.get(URL, {"format": "jsonl", "site": str(site.id)})

    (record,) = _exported(practice)
    assert (record.actor_kind, record.actor_id) == ("staff", str(compliance.pk))
    assert record.site_id == site.id
    assert record.payload["format"] == "jsonl"
    assert record.payload["filters"]["practice_ids"] == [str(practice.id)]
    assert record.payload["filters"]["site_id"] == str(site.id)
    assert _exported(other_practice) == []
    lines = [json.loads(line) for line in _body(response).decode().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 4]


def test_filters_from_the_query_string(client, compliance, practice, events):
    client.force_login(compliance)

    response = client.get(
        URL,
        {
            "format": "jsonl",
            "practice": str(practice.id),
            "since": events[1].occurred_at.isoformat(),
            "event_type": "payment.state_changed",
            "actor": "system:tests",
        },
    )

    lines = [json.loads(line) for line in _body(response).decode().splitlines()]
    assert [line["seq"] for line in lines] == [2, 3]


def test_reception_is_refused_and_nothing_is_recorded(client, practice, events):
    client.force_login(make_staff(Role.RECEPTION, practice=practice))

    response = client.get(URL, {"format": "csv"})

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert _exported(practice) == []


def test_another_practices_id_is_not_found(client, compliance, practice, events, other_practice):
    client.force_login(compliance)

    response = client.get(URL, {"format": "csv", "practice": str(other_practice.id)})

    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "message": "No such practice.",
        "field": "practice",
    }
    assert _exported(practice) == [] and _exported(other_practice) == []


def test_site_limited_admin_sees_their_sites_events_only(
    client, practice, site, other_site, events
):
    user = make_staff(Role.COMPLIANCE_ADMIN, practice=practice, sites=[site])
    client.force_login(user)

    response = client.get(URL, {"format": "jsonl"})
    elsewhere = client.get(URL, {"format": "jsonl", "site": str(other_site.id)})

    lines = [json.loads(line) for line in _body(response).decode().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 4]  # not seq 3, at other_site
    assert elsewhere.status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "format"),
        ({"format": "xlsx"}, "format"),
        ({"format": "csv", "since": "last week"}, "since"),
        ({"format": "csv", "practice": "123"}, "practice"),
        ({"format": "csv", "event_type": "payment.exploded"}, "event_type"),
        ({"format": "csv", "actor": ["staff:1", "staff:2"]}, "actor"),
    ],
)
def test_bad_filter_values_are_a_400_naming_the_field(client, compliance, practice, query, field):
    client.force_login(compliance)

    response = client.get(URL, query)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_filter" and body["field"] == field and body["message"]
    assert _exported(practice) == []


def test_anonymous_users_are_sent_to_log_in(client, db):
    response = client.get(URL, {"format": "csv"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_only_get_is_allowed(client, compliance):
    client.force_login(compliance)
    assert client.post(URL, {"format": "csv"}).status_code == 405
