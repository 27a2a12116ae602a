"""Writing audit events: the only way rows enter the audit table.

`audit_record` must run inside the transaction of the change it records, so the
event exists exactly when the change does. It appends to the practice's hash
chain under a row lock on the chain head, and logs the event as one structured
line once the transaction commits.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import structlog
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.chain import HASHED_FIELDS, chain_hash
from audit.models import AuditChainHead, AuditEvent, EventType
from primoro_payments.logging import current_request_id

log = structlog.get_logger("audit")

_CENTS = Decimal("0.01")


def _exact(value):
    """Floats become strings: PostgreSQL's jsonb may give a float back as an integer."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {key: _exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_exact(item) for item in value]
    return value


def _normalised(payload: dict) -> dict:
    """Round-trip through JSON so that what is hashed is exactly what PostgreSQL gives back."""
    return _exact(json.loads(json.dumps(payload, cls=DjangoJSONEncoder)))


def _lock_chain_head(practice_id) -> AuditChainHead:
    heads = AuditChainHead.objects.select_for_update()
    try:
        return heads.get(practice_id=practice_id)
    except AuditChainHead.DoesNotExist:
        AuditChainHead.objects.bulk_create(
            [AuditChainHead(practice_id=practice_id)], ignore_conflicts=True
        )
        return heads.get(practice_id=practice_id)


def audit_record(
    *,
    event_type: EventType | str,
    practice_id,
    actor: Actor,
    site_id=None,
    terminal_id=None,
    payment_id=None,
    subject_type: str = "",
    subject_id: str = "",
    amount: Decimal | None = None,
    currency: str = "",
    method: str = "",
    target_type: str = "",
    target_id: str = "",
    provider_reference: str = "",
    from_state: str = "",
    to_state: str = "",
    reason_code: str = "",
    approver: Actor | None = None,
    mandate_reference: str = "",
    payload: dict | None = None,
) -> AuditEvent:
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    head = _lock_chain_head(practice_id)
    event = AuditEvent(
        event_id=uuid.uuid4(),
        practice_id=practice_id,
        seq=head.seq + 1,
        event_type=str(event_type),
        occurred_at=timezone.now(),
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_label=actor.label[:200],
        site_id=site_id,
        terminal_id=terminal_id,
        payment_id=payment_id,
        subject_type=subject_type,
        subject_id=str(subject_id or ""),
        amount=amount.quantize(_CENTS) if amount is not None else None,
        currency=currency,
        method=str(method or ""),
        target_type=str(target_type or ""),
        target_id=str(target_id or ""),
        provider_reference=provider_reference or "",
        from_state=str(from_state or ""),
        to_state=str(to_state or ""),
        reason_code=str(reason_code or ""),
        approver_id=approver.id if approver else "",
        approver_label=approver.label[:200] if approver else "",
        mandate_reference=mandate_reference or "",
        request_id=current_request_id() or "",
        payload=_normalised(payload or {}),
        prev_hash=head.last_hash,
    )
    event.hash = chain_hash(head.last_hash, [getattr(event, f) for f in HASHED_FIELDS])
    event.save(force_insert=True)
    AuditChainHead.objects.filter(pk=head.pk).update(seq=event.seq, last_hash=event.hash)
    transaction.on_commit(lambda: _log_event(event))
    return event


def _log_event(event: AuditEvent) -> None:
    log.info(
        "audit_event",
        audit_event_type=event.event_type,
        audit_event_id=str(event.event_id),
        practice_id=str(event.practice_id),
        seq=event.seq,
        actor=f"{event.actor_kind}:{event.actor_id}",
        payment_id=str(event.payment_id) if event.payment_id else None,
        site_id=str(event.site_id) if event.site_id else None,
        terminal_id=str(event.terminal_id) if event.terminal_id else None,
        amount=str(event.amount) if event.amount is not None else None,
        from_state=event.from_state or None,
        to_state=event.to_state or None,
        reason_code=event.reason_code or None,
        provider_reference=event.provider_reference or None,
        mandate_reference=event.mandate_reference or None,
        request_id=event.request_id or None,
    )
