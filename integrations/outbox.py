"""Writing outbox rows: the only way an outbound message is created."""

from __future__ import annotations

import json
import uuid

import structlog
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, router, transaction
from django.db.models.constants import OnConflict
from django.db.models.sql.subqueries import InsertQuery
from django.utils import timezone

from integrations.catalog import require_registered
from integrations.models import Destination, OutboxMessage

log = structlog.get_logger("integrations.outbox")


def _publish_relay() -> None:
    """After commit: ask a worker to relay now. If the broker is down, the beat sweep will."""
    from kombu.exceptions import OperationalError

    from integrations.tasks import relay_outbox

    try:
        relay_outbox.apply_async(retry=False)
    except OperationalError as exc:
        log.warning("outbox_relay_not_published", error=str(exc))


def request_relay() -> None:
    """Relay promptly once the current transaction commits; at most one request per transaction.

    Off when OUTBOX_RELAY_ON_COMMIT is false (the default with eager Celery, so
    unit tests and eager runs never make network calls inside a commit).
    """
    if not settings.OUTBOX_RELAY_ON_COMMIT:
        return
    if any(entry[1] is _publish_relay for entry in connection.run_on_commit):
        return
    transaction.on_commit(_publish_relay, robust=True)


def outbox_enqueue(
    *,
    destination: Destination | str,
    event_type: str,
    practice_id,
    payload: dict,
    payment_id=None,
    dedupe_key: str | None = None,
    schema_version: int = 1,
) -> OutboxMessage | None:
    """Queue one message in the caller's transaction.

    With a `dedupe_key`, a second message for the same cause is not written and
    None is returned. Only the messages registered in `integrations.catalog` exist.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("outbox_enqueue must run inside the transaction of its cause")
    require_registered(destination, event_type, payload)
    # occurred_at: when the change was made, i.e. now, inside its transaction; the commit
    # follows after the rest of that transaction (docs/contracts.md, "Delivery guarantees").
    now = timezone.now()
    message = OutboxMessage(
        id=uuid.uuid4(),
        practice_id=practice_id,
        destination=str(destination),
        event_type=event_type,
        schema_version=schema_version,
        occurred_at=now,
        payload=json.loads(json.dumps(payload, cls=DjangoJSONEncoder)),
        payment_id=payment_id,
        dedupe_key=dedupe_key,
        next_attempt_at=now,
    )
    if dedupe_key is None:
        message.save(force_insert=True)
    elif not _insert_once(message):
        return None
    request_relay()
    return message


def _insert_once(message: OutboxMessage) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: False when its dedupe key is taken.

    One statement where a savepoint, an INSERT that may fail and a release would be
    three; the caller's transaction never sees an error to recover from.
    """
    query = InsertQuery(OutboxMessage, on_conflict=OnConflict.IGNORE)
    query.insert_values(OutboxMessage._meta.concrete_fields, [message])
    compiler = query.get_compiler(using=router.db_for_write(OutboxMessage))
    compiler.returning_fields = [OutboxMessage._meta.pk]
    [(sql, params)] = compiler.as_sql()
    with compiler.connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchone() is not None
    if inserted:
        message._state.adding, message._state.db = False, compiler.using
    return inserted
