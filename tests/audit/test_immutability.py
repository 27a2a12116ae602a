"""PostgreSQL itself refuses to change or remove audit rows, whoever asks."""

from __future__ import annotations

import pytest
from django.db import ProgrammingError, connection, transaction

from audit.models import AuditEvent
from tests.audit.helpers import IGNORE_EVERY_AUDIT_TRIGGER, record_events, row


@pytest.fixture
def event(practice, site):
    (event,) = record_events(practice, 1, site=site)
    return event


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET payload = '{\"n\": 99}'::jsonb, amount = 0 WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ],
    ids=["update", "delete"],
)
def test_raw_sql_cannot_change_or_delete_a_row(event, sql):
    before = row(event)
    with (
        pytest.raises(ProgrammingError, match="Cannot update or delete rows"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [event.pk])
    assert row(event) == before
    assert AuditEvent.objects.count() == 1


def test_raw_sql_cannot_truncate_the_table(event):
    before = row(event)
    with (
        pytest.raises(ProgrammingError, match="Cannot truncate rows"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # Fire the row's deferred FK checks first, as a fresh transaction would have:
        # PostgreSQL refuses TRUNCATE with pending trigger events before our trigger runs.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE audit_auditevent CASCADE")
    assert row(event) == before


def test_the_orm_cannot_change_or_delete_either(event):
    with pytest.raises(ProgrammingError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(reason_code="edited")
    with pytest.raises(ProgrammingError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).reason_code == ""


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("UPDATE audit_auditevent SET amount = 0 WHERE id = %s", "Cannot update or delete rows"),
        ("DELETE FROM audit_auditevent WHERE id = %s", "Cannot update or delete rows"),
        ("TRUNCATE audit_auditevent CASCADE", "Cannot truncate rows"),
    ],
    ids=["update", "delete", "truncate"],
)
def test_asking_pgtrigger_to_ignore_the_triggers_changes_nothing(event, sql, refusal):
    """pgtrigger's triggers skip themselves for `SET pgtrigger.ignore`; these are not pgtrigger's."""
    before = row(event)
    with (
        pytest.raises(ProgrammingError, match=refusal),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(IGNORE_EVERY_AUDIT_TRIGGER.replace("SET ", "SET LOCAL ", 1))
        cursor.execute(sql, [event.pk] if "%s" in sql else None)
    assert row(event) == before
