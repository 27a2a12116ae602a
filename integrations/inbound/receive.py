"""Accepting one verified inbound event: its effect and its record in one transaction.

The `InboundEvent` row is inserted first, inside the transaction that then
runs the contract's handler: a concurrent delivery of the same event id waits
on the unique index and, once the first commits, is answered with the first
answer; if the first fails, nothing of it remains and the second runs. A
refusal (invalid body, domain rule) rolls everything back: no row, no effect.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import structlog
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction

from integrations.inbound.contracts import contract_for
from integrations.inbound.models import InboundEvent
from payments.errors import PaymentError

log = structlog.get_logger("integrations.inbound")


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict
    replay: bool = False


class _AlreadyReceived(Exception):
    """The event id is taken: answer with what was answered the first time."""


def _replay(module: str, event_id: str, digest: str) -> Reply | None:
    first = InboundEvent.objects.filter(module=module, event_id=event_id).first()
    if first is None:
        return None
    if first.body_sha256 != digest:
        return Reply(
            409,
            {
                "code": "event_id_reused",
                "message": "This event id was already used for a different body.",
                "field": "X-Primoro-Event-Id",
            },
        )
    log.info("inbound_duplicate", module=module, event_type=first.event_type, event_id=event_id)
    return Reply(first.status_code, first.response, replay=True)


def inbound_receive(*, module: str, event_type: str, event_id: str, raw_body: bytes) -> Reply:
    """Run a verified event's contract once; a repeated event id gets the first answer."""
    digest = hashlib.sha256(raw_body).hexdigest()
    try:
        body = json.loads(raw_body or b"null")
    except ValueError:
        return Reply(400, {"code": "invalid_json", "message": "The body is not valid JSON."})
    if b"\\u0000" in raw_body:  # PostgreSQL cannot store U+0000; no contract needs it
        return Reply(400, {"code": "invalid_json", "message": "The body holds a NUL character."})
    earlier = _replay(module, event_id, digest)
    if earlier is not None:
        return earlier
    handle = contract_for(module, event_type).handle
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    event = InboundEvent.objects.create(
                        module=module,
                        event_id=event_id,
                        event_type=event_type,
                        body_sha256=digest,
                        body=body,
                    )
            except IntegrityError:
                raise _AlreadyReceived from None
            answer = handle(body)
            event.practice_id = answer.practice_id
            event.response = json.loads(json.dumps(answer.body, cls=DjangoJSONEncoder))
            event.save(update_fields=["practice", "response"])
    except _AlreadyReceived:
        return _replay(module, event_id, digest) or Reply(
            409, {"code": "conflict", "message": "Try again."}
        )
    except PaymentError as exc:
        log.info(
            "inbound_refused",
            module=module,
            event_type=event_type,
            event_id=event_id,
            code=exc.code,
            field=exc.field,
        )
        return Reply(exc.status, exc.as_dict())
    except IntegrityError as exc:
        log.warning(
            "inbound_conflict",
            module=module,
            event_type=event_type,
            event_id=event_id,
            error=str(exc),
        )
        return Reply(
            409,
            {
                "code": "conflict",
                "message": "The request conflicts with a record that already exists.",
            },
        )
    log.info("inbound_accepted", module=module, event_type=event_type, event_id=event_id)
    return Reply(event.status_code, event.response)
