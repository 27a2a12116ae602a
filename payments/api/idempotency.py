"""Idempotency-Key on POST: Stripe's semantics, kept in PostgreSQL.

A POST with `Idempotency-Key: <key>` is run once per (principal, key):

- the first request claims the key (a row, committed before the work starts)
  and, when it finishes with a status below 500, stores that status and body;
- a repeat with the same method, path and body gets the stored response again,
  with `Idempotent-Replayed: true`, and runs nothing;
- the same key with a different method, path or body is refused: 422
  `idempotency_key_reused`;
- a repeat while the first is still running gets 409
  `idempotency_request_in_progress` (retry after a moment). A claim whose
  request died without finishing is taken over after LEASE;
- a 5xx (e.g. the card provider was unreachable, nothing changed) or an
  unexpected error releases the key, so the client may retry with it.

Keys are kept IDEMPOTENCY_KEY_TTL_HOURS (24 h): the beat task
`expire_idempotency_keys` deletes older ones, and an older key met before that
counts as new. Without the header a POST simply runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps

import structlog
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from payments.api.errors import ApiError
from payments.api.models import IdempotencyKey

log = structlog.get_logger("payments.api.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
LEASE = timedelta(seconds=120)
Status = IdempotencyKey.Status


def _ttl() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)


def request_fingerprint(method: str, path: str, data) -> str:
    """SHA-256 of the method, path and body (JSON with sorted keys: key order does not matter)."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{body}".encode()).hexdigest()


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


@dataclass(frozen=True)
class Claim:
    row: IdempotencyKey
    replay: Response | None = None


# One statement claims a key: a new row, or an expired row taken over as new. A live
# row of the key's earlier use is left alone (no row returned) and read afterwards.
_CLAIM_SQL = """
INSERT INTO {table} AS k
    (principal, key, method, path, request_hash, status,
     response_status, response_body, created_at, locked_at, completed_at)
VALUES (%s, %s, %s, %s, %s, %s, NULL, NULL, %s, %s, NULL)
ON CONFLICT (principal, key) DO UPDATE SET
    method = EXCLUDED.method, path = EXCLUDED.path, request_hash = EXCLUDED.request_hash,
    status = EXCLUDED.status, response_status = NULL, response_body = NULL,
    created_at = EXCLUDED.created_at, locked_at = EXCLUDED.locked_at, completed_at = NULL
WHERE k.created_at < %s
RETURNING id
"""


def idempotency_claim(*, principal: str, key: str, method: str, path: str, fingerprint: str):
    """Claim `key` for this request, or return the stored response of its first use.

    The claim is one INSERT ... ON CONFLICT, committed at once (autocommit) before the
    work starts: no separate clean-up of an expired key, no transaction round trips.
    """
    now = timezone.now()
    fields = {"principal": principal, "key": key, "method": method, "path": path[:255]}
    sql = _CLAIM_SQL.format(table=connection.ops.quote_name(IdempotencyKey._meta.db_table))
    row = None
    while row is None:
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [*fields.values(), fingerprint, Status.IN_PROGRESS, now, now, now - _ttl()]
            )
            claimed = cursor.fetchone()
        if claimed is not None:
            return Claim(
                IdempotencyKey(
                    id=claimed[0], **fields, request_hash=fingerprint, created_at=now, locked_at=now
                )
            )
        # Its earlier use; gone already only if the expiry task deleted it meanwhile.
        row = IdempotencyKey.objects.filter(principal=principal, key=key).first()
    if row.request_hash != fingerprint:
        raise ApiError(
            "This Idempotency-Key was already used with a different request. "
            "Use a new key for a new request.",
            code="idempotency_key_reused",
            status_code=422,
            field=HEADER,
        )
    if row.status == Status.COMPLETED:
        replay = Response(row.response_body, status=row.response_status)
        replay[REPLAYED_HEADER] = "true"
        return Claim(row, replay=replay)
    taken_over = IdempotencyKey.objects.filter(
        pk=row.pk, status=Status.IN_PROGRESS, locked_at__lt=now - LEASE
    ).update(locked_at=now)
    if taken_over:
        log.warning("idempotency_claim_taken_over", principal=principal, key_id=row.pk)
        return Claim(row)
    raise ApiError(
        "A request with this Idempotency-Key is still being processed. Retry in a moment.",
        code="idempotency_request_in_progress",
        status_code=409,
        field=HEADER,
    )


def idempotency_finish(*, claim: Claim, response: Response) -> None:
    """Store the response of a claimed request (below 500), or release the key."""
    if response.status_code >= 500:
        idempotency_release(claim=claim)
        return
    body = json.loads(JSONRenderer().render(response.data)) if response.data is not None else None
    IdempotencyKey.objects.filter(pk=claim.row.pk).update(
        status=Status.COMPLETED,
        response_status=response.status_code,
        response_body=body,
        completed_at=timezone.now(),
    )


def idempotency_release(*, claim: Claim) -> None:
    IdempotencyKey.objects.filter(pk=claim.row.pk, status=Status.IN_PROGRESS).delete()


def idempotency_expire(*, now=None, batch: int = 5000) -> int:
    """Delete keys older than the TTL, in batches (the beat task)."""
    cutoff = (now or timezone.now()) - _ttl()
    deleted = 0
    while True:
        ids = list(
            IdempotencyKey.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[
                :batch
            ]
        )
        if not ids:
            return deleted
        deleted += IdempotencyKey.objects.filter(pk__in=ids).delete()[0]


def idempotent(handler):
    """Make a POST handler honour Idempotency-Key. The view provides `idempotency_principal()`."""

    @wraps(handler)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not valid_key(key):
            raise ApiError(
                f"{HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                code="invalid_idempotency_key",
                status_code=400,
                field=HEADER,
            )
        claim = idempotency_claim(
            principal=view.idempotency_principal(request, *args, **kwargs),
            key=key,
            method=request.method,
            path=request.path,
            fingerprint=request_fingerprint(request.method, request.path, request.data),
        )
        if claim.replay is not None:
            return claim.replay
        try:
            response = handler(view, request, *args, **kwargs)
        except BaseException as exc:
            handled = view.handled_error(exc)
            if handled is None:
                idempotency_release(claim=claim)
                raise
            response = handled
        idempotency_finish(claim=claim, response=response)
        return response

    return wrapper
