"""The application's runtime role cannot change the audit trail by any path a session has.

The role is made by `manage.py db_grant_runtime_role` (as in docker-compose's
migrate step) and the app's own connection is reopened as it, so everything
below runs exactly as the deployed app would, with none of the owner's rights.
"""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import ProgrammingError, connection

from audit.models import AuditChainHead, AuditEvent
from audit.verify import verify_all
from payments import services
from payments.models import PaymentMethod, Refund, TargetType
from tests.audit.helpers import IGNORE_EVERY_AUDIT_TRIGGER, record_events, row
from tests.db import reconnected

pytestmark = pytest.mark.django_db(transaction=True)


def _drop_role(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
        if cursor.fetchone():
            cursor.execute(f'DROP OWNED BY "{name}"')
            cursor.execute(f'DROP ROLE "{name}"')


@pytest.fixture
def runtime_role(tmp_path):
    """A role created and granted by the command, as docker-compose's migrate step does."""
    name = f"primoro_test_runtime_{uuid.uuid4().hex[:12]}"
    password = tmp_path / "password"
    password.write_text("a-runtime-password\n")
    call_command("db_grant_runtime_role", name, password_file=str(password), stdout=io.StringIO())
    yield name
    _drop_role(name)


@pytest.fixture
def event(practice, site):
    (event,) = record_events(practice, 1, site=site)
    return event


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("UPDATE audit_auditevent SET amount = 0 WHERE id = %s", "pk"),
        ("DELETE FROM audit_auditevent WHERE id = %s", "pk"),
        ("TRUNCATE audit_auditevent CASCADE", None),
    ],
    ids=["update", "delete", "truncate"],
)
def test_the_runtime_role_cannot_change_audit_rows_even_with_pgtrigger_ignore(
    runtime_role, event, statement, params
):
    before = row(event)

    with reconnected(USER=runtime_role), connection.cursor() as cursor:
        cursor.execute(IGNORE_EVERY_AUDIT_TRIGGER)
        with pytest.raises(ProgrammingError, match="permission denied for table audit_auditevent"):
            cursor.execute(statement, [event.pk] if params else None)

    assert row(event) == before
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_append_only", "must be owner"),
        ("ALTER TABLE audit_auditevent DISABLE TRIGGER ALL", "must be owner"),
        ("DROP TRIGGER audit_append_only ON audit_auditevent", "must be owner"),
        (
            "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
            "must be owner|permission denied for schema",  # PostgreSQL 15+ says the latter
        ),
        ("SET session_replication_role = replica", "permission denied to set parameter"),
    ],
    ids=["disable-trigger", "disable-all", "drop-trigger", "replace-function", "replica-role"],
)
def test_the_runtime_role_cannot_switch_the_triggers_off(runtime_role, event, statement, refusal):
    with (
        reconnected(USER=runtime_role),
        connection.cursor() as cursor,
        pytest.raises(ProgrammingError, match=refusal),
    ):
        cursor.execute(statement)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'audit_auditevent'::regclass AND NOT tgisinternal ORDER BY tgname"
        )
        assert cursor.fetchall() == [("audit_append_only", "O"), ("audit_no_truncate", "O")]


def test_the_app_works_as_the_runtime_role_and_its_chain_verifies(
    runtime_role, practice, site, patient, reception_actor, manager_actor
):
    with reconnected(USER=runtime_role), connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone() == (runtime_role,)
        cash = services.offline_payment_record(
            actor=reception_actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.INVOICE,
            target_id="INV-RUNTIME",
            amount="40.00",
            method=PaymentMethod.CASH,
        )
        services.refund_request(
            payment_id=cash.id, actor=manager_actor, amount="15.00", reason_code="other"
        )
        events = record_events(practice, 3, site=site)
        results = verify_all([practice.id], workers=1)
        with pytest.raises(ProgrammingError, match="permission denied"):
            AuditEvent.objects.filter(pk=events[0].pk).update(reason_code="edited")

    written = AuditEvent.objects.filter(practice=practice)
    assert written.filter(payment_id=cash.id).count() >= 2  # captured, then refunded
    assert Refund.objects.get(payment=cash).status == Refund.Status.SUCCEEDED
    assert AuditChainHead.objects.get(practice=practice).seq == written.count()
    assert [(r.ok, r.events_checked) for r in results] == [(True, written.count())]
    assert AuditEvent.objects.get(pk=events[0].pk).reason_code == ""


def test_tables_made_by_later_migrations_are_granted_too(runtime_role):
    table = f"later_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:  # as the owner, like a later `migrate`
        cursor.execute(f"CREATE TABLE {table} (id bigint GENERATED BY DEFAULT AS IDENTITY)")
    try:
        with reconnected(USER=runtime_role), connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} DEFAULT VALUES RETURNING id")
            assert cursor.fetchone() == (1,)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {table}")


def test_the_command_is_repeatable_and_refuses_a_role_that_could_switch_triggers_off(
    runtime_role,
):
    call_command(
        "db_grant_runtime_role", runtime_role, stdout=io.StringIO()
    )  # again: no change, no error
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = %s AND table_name = 'audit_auditevent' ORDER BY 1",
            [runtime_role],
        )
        assert [p for (p,) in cursor.fetchall()] == ["INSERT", "SELECT"]

    with pytest.raises(CommandError, match="superuser or owns the tables"):
        call_command("db_grant_runtime_role", connection.settings_dict["USER"])
    with pytest.raises(CommandError, match="does not exist"):
        call_command("db_grant_runtime_role", f"primoro_test_missing_{uuid.uuid4().hex[:8]}")
