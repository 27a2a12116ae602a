"""Writing audit events the way the application does, and tampering with them the way it cannot."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pgtrigger
from django.db import connection, transaction

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from audit.services import audit_record

APPEND_ONLY = "audit.AuditEvent:audit_append_only"


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
    """Raw SQL on the audit table with the append-only trigger switched off (what an attacker with superuser rights could do)."""
    with pgtrigger.ignore(APPEND_ONLY), connection.cursor() as cursor:
        cursor.execute(sql, params)


def row(event: AuditEvent) -> tuple:
    return AuditEvent.objects.filter(pk=event.pk).values_list("payload", "amount", "hash").get()
