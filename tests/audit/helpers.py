"""Writing audit events the way the application does, and tampering with them the way it cannot."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import connection, transaction

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from audit.services import audit_record

# What pgtrigger.ignore() sets, naming every trigger the audit table has had (the plain
# ones, and pgtrigger's before audit/0006): any session may set it, so it must change nothing.
IGNORE_EVERY_AUDIT_TRIGGER = (
    "SET pgtrigger.ignore = '{audit_append_only,audit_no_truncate,"
    "pgtrigger_audit_append_only_f6eda,pgtrigger_audit_no_truncate_50e0d}'"
)


def record_events(practice, count: int, *, site=None, actor: Actor | None = None, **fields):
    """`count` events in `practice`'s chain through audit_record, each in its own transaction."""
    actor = actor or Actor.system("tests")
    events = []
    for n in range(count):
        with transaction.atomic():
            events.append(
                audit_record(
                    event_type=fields.get("event_type", EventType.PAYMENT_STATE_CHANGED),
                    practice_id=practice.id,
                    actor=actor,
                    site_id=site.id if site else None,
                    payment_id=fields.get("payment_id", uuid.uuid4()),
                    amount=fields.get("amount", Decimal("10.00") + n),
                    currency="GBP",
                    method="card",
                    from_state="initiated",
                    to_state="captured",
                    provider_reference=fields.get("provider_reference", f"dna-{n}"),
                    payload=fields.get("payload", {"n": n, "note": "née €"}),
                )
            )
    return events


def tamper(sql: str, params: list) -> None:
    """Raw SQL on the audit table past its append-only trigger, as only a superuser can.

    `session_replication_role = replica` fires no ordinary trigger; PostgreSQL
    lets only superusers set it (the test database user is one, the
    application's runtime role is not: tests/audit/test_runtime_role.py).
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def row(event: AuditEvent) -> tuple:
    return AuditEvent.objects.filter(pk=event.pk).values_list("payload", "amount", "hash").get()
