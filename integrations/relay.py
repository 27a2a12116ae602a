"""The outbox relay: deliver due outbox rows to their destinations, with retries, once each.

How a pass works (`relay_due`):

1. **Claim** up to `batch_size` due rows in a short transaction with
   `SELECT ... FOR UPDATE SKIP LOCKED`, and lease them by moving
   `next_attempt_at` to now + `OUTBOX_LEASE_SECONDS`. Concurrent relays skip
   rows another relay is claiming and do not see leased rows as due, so two
   workers never deliver the same row at the same time. No lock is held during
   HTTP calls.
2. **Deliver** each row outside any transaction: an HTTP POST of the signed
   envelope (see `integrations/signing.py` and docs/contracts.md) with
   connect/read timeouts and no retries inside. PMS rows go through the
   practice's PMS adapter (`integrations/pms/`).
3. **Record** the outcome, fenced on the lease (status still pending and
   `next_attempt_at` still our lease): 2xx → delivered; 408/429/5xx, timeouts
   and connection errors → retried with exponential backoff and full jitter;
   any other 4xx or a redirect → dead at once (repeating the same request
   cannot succeed); past `OUTBOX_MAX_ATTEMPTS` → dead. A destination with no
   endpoint → disabled, with the reason in `last_error` and a log line. Once a
   destination fails transiently, its other rows in the batch are deferred
   without a call (and without using an attempt), so one hung module does not
   hold up the rest.

Delivery is at least once: a relay that dies after the POST but before
recording leaves the row to be sent again when its lease expires. Every
message carries a stable event id (the row id) and consumers de-duplicate on it.
PMS writebacks of one payment are delivered in the order they were written.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter as Tally
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum

import httpx
import structlog
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from prometheus_client import Counter, Histogram

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from integrations.destinations import Endpoint, endpoint_for
from integrations.models import Destination, OutboxMessage
from integrations.pms.adapters import pms_adapter_for
from integrations.pms.services import Recorded, fallen_back, pms_writeback_record_outcome
from integrations.signing import signed_headers
from practices import access
from practices.roles import Perm
from primoro_payments.http import tls_context

log = structlog.get_logger("integrations.relay")

Status = OutboxMessage.Status

EMISSION_LATENCY = Histogram(
    "primoro_outbox_emission_latency_seconds",
    "Seconds from an outbox row being written (occurred_at, inside the transaction of its "
    "cause, so just before that commits) to its successful delivery.",
    ["event_type", "destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600),
)
DELIVERY_OUTCOMES = Counter(
    "primoro_outbox_delivery_outcomes_total",
    "Outbox delivery outcomes by destination.",
    ["destination", "outcome"],
)

# HTTP statuses worth repeating: the sink was busy, slow or briefly broken.
_TRANSIENT_4XX = frozenset({408, 425, 429})


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # transient: try again later
    REJECTED = "rejected"  # permanent: the same request cannot succeed


@dataclass(frozen=True)
class HttpResult:
    """What one POST came to, in the relay's terms."""

    outcome: Outcome
    detail: str
    status_code: int | None = None
    retry_after: float | None = None


@dataclass
class RelayStats:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    disabled: int = 0
    fallbacks: int = 0
    deferred: int = 0
    released: int = 0
    lost_leases: int = 0
    more_due: bool = False

    def add(self, other: RelayStats) -> None:
        for item in fields(self):
            value = getattr(other, item.name)
            if type(value) is int:  # the counters, not the more_due flag
                setattr(self, item.name, getattr(self, item.name) + value)

    def as_dict(self) -> dict:
        return asdict(self)


# --- The envelope ------------------------------------------------------------


def envelope(message: OutboxMessage) -> dict:
    """The JSON every destination receives (docs/contracts.md, "Envelope")."""
    return {
        "event_id": str(message.id),
        "type": message.event_type,
        "schema_version": message.schema_version,
        "practice_id": str(message.practice_id),
        "occurred_at": message.occurred_at.isoformat(),
        "payload": message.payload,
    }


def encode(document: dict) -> bytes:
    """The exact bytes sent and signed: compact, key-sorted JSON."""
    return json.dumps(
        document, cls=DjangoJSONEncoder, separators=(",", ":"), sort_keys=True
    ).encode()


# --- HTTP ------------------------------------------------------------------------


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def classify(response: httpx.Response) -> HttpResult:
    """2xx delivered; 408/425/429/5xx worth retrying; any other status will not change."""
    code = response.status_code
    if 200 <= code < 300:
        return HttpResult(Outcome.DELIVERED, f"HTTP {code}", code)
    detail = f"HTTP {code}: {response.text[:300]}".strip()
    if code >= 500 or code in _TRANSIENT_4XX:
        return HttpResult(Outcome.RETRY, detail, code, _retry_after(response))
    return HttpResult(Outcome.REJECTED, detail, code)


class Transport:
    """Signed POSTs over one httpx client: timeouts on every call, no retries inside."""

    def __init__(self, client: httpx.Client):
        self.client = client

    @classmethod
    def open(cls) -> Transport:
        timeout = httpx.Timeout(
            settings.OUTBOX_HTTP_TIMEOUT_SECONDS,
            connect=settings.OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS,
        )
        return cls(
            httpx.Client(
                timeout=timeout,
                verify=tls_context(),
                follow_redirects=False,
                headers={"User-Agent": "primoro-payments-outbox/1"},
            )
        )

    def close(self) -> None:
        self.client.close()

    def post(self, endpoint: Endpoint, message: OutboxMessage, document: dict) -> HttpResult:
        body = encode(document)
        headers = signed_headers(
            endpoint.secret,
            body,
            event_id=str(message.id),
            event_type=message.event_type,
            schema_version=message.schema_version,
            attempt=message.attempts + 1,
        )
        try:
            response = self.client.post(endpoint.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return HttpResult(Outcome.RETRY, f"Timed out: {type(exc).__name__}")
        except httpx.TransportError as exc:
            return HttpResult(Outcome.RETRY, f"Connection failed: {type(exc).__name__}: {exc}")
        return classify(response)


# --- Backoff -------------------------------------------------------------------


def backoff_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after `attempts` failed attempts: full jitter, at least `base`.

    The ceiling doubles with each attempt up to `cap`; the delay is drawn
    uniformly below it, so a crowd of failed rows does not retry in step. The
    floor keeps one relay pass from retrying a row straight away.
    """
    ceiling = min(cap, base * (2 ** max(attempts, 0)))
    draw = (rng or random).uniform(0, ceiling)  # jitter, not security
    return min(cap, max(base, draw))


def next_attempt_at(attempts: int, *, now: datetime, retry_after: float | None = None) -> datetime:
    delay = backoff_delay(
        attempts,
        base=settings.OUTBOX_BACKOFF_BASE_SECONDS,
        cap=settings.OUTBOX_BACKOFF_CAP_SECONDS,
    )
    if retry_after is not None:
        delay = min(max(delay, retry_after), settings.OUTBOX_BACKOFF_CAP_SECONDS)
    return now + timedelta(seconds=delay)


# --- Claiming ------------------------------------------------------------------


def _due(now: datetime):
    """Pending rows whose time has come; a PMS row waits for earlier PMS rows of its payment."""
    earlier_pms = OutboxMessage.objects.filter(
        destination=Destination.PMS,
        payment_id=OuterRef("payment_id"),
        status=Status.PENDING,
        occurred_at__lt=OuterRef("occurred_at"),
    )
    return OutboxMessage.objects.filter(status=Status.PENDING, next_attempt_at__lte=now).filter(
        ~Q(destination=Destination.PMS) | Q(payment_id__isnull=True) | ~Exists(earlier_pms)
    )


def _claim(batch_size: int) -> tuple[list[OutboxMessage], datetime]:
    """Take and lease due rows in one short transaction (SKIP LOCKED: never block on others)."""
    with transaction.atomic():
        now = timezone.now()
        rows = list(
            _due(now)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("practice")
            .order_by("next_attempt_at", "occurred_at")[:batch_size]
        )
        lease_until = now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
        if rows:
            OutboxMessage.objects.filter(pk__in=[row.pk for row in rows]).update(
                next_attempt_at=lease_until
            )
    return rows, lease_until


def _fenced(message: OutboxMessage, lease_until: datetime):
    """The row, only while it is still pending under our lease."""
    return OutboxMessage.objects.filter(
        pk=message.pk, status=Status.PENDING, next_attempt_at=lease_until
    )


def _release(rows: list[OutboxMessage], lease_until: datetime) -> int:
    """Hand back rows we claimed but did not get to, so another pass takes them now."""
    return OutboxMessage.objects.filter(
        pk__in=[row.pk for row in rows], status=Status.PENDING, next_attempt_at=lease_until
    ).update(next_attempt_at=timezone.now())


# --- Recording -----------------------------------------------------------------


def _observe_delivery(message: OutboxMessage, delivered_at: datetime, stats: RelayStats) -> None:
    latency = max(0.0, (delivered_at - message.occurred_at).total_seconds())
    EMISSION_LATENCY.labels(message.event_type, message.destination).observe(latency)
    log.info(
        "outbox_delivered",
        event_id=str(message.id),
        event_type=message.event_type,
        destination=message.destination,
        practice_id=str(message.practice_id),
        attempts=message.attempts + 1,
        latency_ms=round(latency * 1000, 1),
    )


def _record_http(
    message: OutboxMessage, lease_until: datetime, result: HttpResult, stats: RelayStats
) -> None:
    now = timezone.now()
    attempts = message.attempts + 1
    fenced = _fenced(message, lease_until)
    if result.outcome == Outcome.DELIVERED:
        if fenced.update(
            status=Status.DELIVERED, delivered_at=now, attempts=attempts, last_error=""
        ):
            stats.delivered += 1
            _observe_delivery(message, now, stats)
            DELIVERY_OUTCOMES.labels(message.destination, "delivered").inc()
        else:
            stats.lost_leases += 1
        return
    exhausted = attempts >= settings.OUTBOX_MAX_ATTEMPTS
    if result.outcome == Outcome.RETRY and not exhausted:
        updated = fenced.update(
            attempts=attempts,
            next_attempt_at=next_attempt_at(attempts, now=now, retry_after=result.retry_after),
            last_error=result.detail[:2000],
        )
        stats.retried += updated
        stats.lost_leases += 1 - updated
        DELIVERY_OUTCOMES.labels(message.destination, "retry").inc()
        log.warning(
            "outbox_delivery_retry",
            event_id=str(message.id),
            event_type=message.event_type,
            destination=message.destination,
            attempts=attempts,
            error=result.detail[:300],
        )
        return
    reason = (
        f"Dead after {attempts} attempts: {result.detail}"
        if result.outcome == Outcome.RETRY
        else f"Rejected by the destination (not retried): {result.detail}"
    )
    updated = fenced.update(status=Status.DEAD, attempts=attempts, last_error=reason[:2000])
    stats.dead += updated
    stats.lost_leases += 1 - updated
    DELIVERY_OUTCOMES.labels(message.destination, "dead").inc()
    log.error(
        "outbox_dead_letter",
        event_id=str(message.id),
        event_type=message.event_type,
        destination=message.destination,
        practice_id=str(message.practice_id),
        attempts=attempts,
        error=reason[:300],
    )


def _defer(message: OutboxMessage, lease_until: datetime, cause: str, stats: RelayStats) -> None:
    """Not attempted in this pass because its destination is failing: later, same attempt count."""
    updated = _fenced(message, lease_until).update(
        next_attempt_at=next_attempt_at(message.attempts, now=timezone.now()),
        last_error=f"Deferred: its destination failed earlier in the same pass ({cause})"[:2000],
    )
    stats.deferred += updated
    stats.lost_leases += 1 - updated


def _record_disabled(
    message: OutboxMessage, lease_until: datetime, endpoint: Endpoint, stats: RelayStats
) -> None:
    updated = _fenced(message, lease_until).update(
        status=Status.DISABLED, last_error=endpoint.disabled_reason
    )
    stats.disabled += updated
    DELIVERY_OUTCOMES.labels(message.destination, "disabled").inc()


# --- The pass ------------------------------------------------------------------


def _deliver_pms(
    message: OutboxMessage, lease_until: datetime, transport: Transport, stats: RelayStats
) -> str | None:
    """Write one PMS row through the practice's adapter; return the error if the PMS is failing."""
    adapter = pms_adapter_for(message.practice, transport=transport)
    result = adapter.write_payment(message)
    attempts = message.attempts + (1 if result.attempted else 0)
    outcome = pms_writeback_record_outcome(
        message_id=message.pk,
        lease_until=lease_until,
        result=result,
        retry_at=next_attempt_at(attempts, now=timezone.now(), retry_after=result.retry_after),
    )
    if outcome is None:
        stats.lost_leases += 1
        return None
    DELIVERY_OUTCOMES.labels(message.destination, outcome.value).inc()
    if outcome == Recorded.DELIVERED:
        stats.delivered += 1
        _observe_delivery(message, timezone.now(), stats)
    elif outcome == Recorded.RETRY:
        stats.retried += 1
        return result.detail
    elif outcome == Recorded.FALLBACK:
        stats.fallbacks += 1
    elif outcome == Recorded.DISABLED:
        stats.disabled += 1
    else:
        stats.dead += 1
    return None


def relay_due(*, batch_size: int = 100, deadline: float | None = None) -> RelayStats:
    """Claim, deliver and record one batch of due rows. Safe to run in many workers at once.

    Starts no delivery that might not finish inside the lease (or before
    `deadline`, a `time.monotonic()` value); rows not reached are released.
    After a destination fails transiently, its remaining rows in the batch are
    deferred without a call, so one slow module cannot hold up the others.
    """
    stats = RelayStats()
    rows, lease_until = _claim(batch_size)
    stats.claimed = len(rows)
    if not rows:
        return stats
    per_call = settings.OUTBOX_HTTP_TIMEOUT_SECONDS + settings.OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS
    stop_at = time.monotonic() + settings.OUTBOX_LEASE_SECONDS - 2 * per_call
    if deadline is not None:
        stop_at = min(stop_at, deadline - per_call)
    disabled = Tally()
    failing: dict[str, str] = {}
    transport = Transport.open()
    try:
        for index, message in enumerate(rows):
            if time.monotonic() > stop_at:
                stats.released = _release(rows[index:], lease_until)
                stats.more_due = True
                break
            endpoint = endpoint_for(message.destination)
            if message.destination in failing:
                _defer(message, lease_until, failing[message.destination], stats)
            elif message.destination == Destination.PMS:
                error = _deliver_pms(message, lease_until, transport, stats)
                if error:
                    failing[message.destination] = error
            elif not endpoint.enabled:
                _record_disabled(message, lease_until, endpoint, stats)
                disabled[message.destination] += 1
            else:
                result = transport.post(endpoint, message, envelope(message))
                _record_http(message, lease_until, result, stats)
                if result.outcome == Outcome.RETRY:
                    failing[message.destination] = result.detail[:200]
    finally:
        transport.close()
    for destination, count in disabled.items():
        log.warning(
            "outbox_destination_disabled",
            destination=destination,
            messages=count,
            reason=endpoint_for(destination).disabled_reason,
        )
    return stats


def relay_until_idle(*, time_budget: float | None = None, batch_size: int = 100) -> RelayStats:
    """Relay batches until nothing is due or the time budget is spent."""
    budget = settings.OUTBOX_RELAY_TIME_BUDGET_SECONDS if time_budget is None else time_budget
    deadline = time.monotonic() + budget
    total = RelayStats()
    while True:
        stats = relay_due(batch_size=batch_size, deadline=deadline)
        total.add(stats)
        if stats.claimed == 0:
            return total
        if time.monotonic() >= deadline:
            total.more_due = True
            return total


# --- Redelivery (dead letters and disabled destinations) ---------------------------


REDELIVERABLE = (Status.DEAD, Status.DISABLED)


@transaction.atomic
def outbox_redeliver(*, message_ids, actor: Actor) -> int:
    """Put dead or disabled rows back in the queue: one click for a finance admin.

    Needs MANAGE_EXCEPTIONS at every practice concerned; attempts start again
    from zero. Rows that are pending or delivered are left alone, and so is a
    PMS writeback that fell back to a manual task (`fallen_back`): staff may
    already have entered it by hand, so sending it again could enter it twice.
    Returns how many rows were queued again.
    """
    if not actor.is_staff:
        raise access.NotPermitted(Perm.MANAGE_EXCEPTIONS, "Only staff can redeliver messages.")
    rows = list(
        OutboxMessage.objects.select_for_update()
        .filter(pk__in=list(message_ids), status__in=REDELIVERABLE)
        .order_by("pk")
    )
    for practice_id in sorted({row.practice_id for row in rows}, key=str):
        access.require(actor.user, Perm.MANAGE_EXCEPTIONS, practice_id=practice_id)
    manual = fallen_back([row.pk for row in rows if row.destination == Destination.PMS])
    rows = [row for row in rows if row.pk not in manual]
    if not rows:
        return 0
    now = timezone.now()
    OutboxMessage.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Status.PENDING, attempts=0, next_attempt_at=now
    )
    by_practice: dict = {}
    for row in rows:
        by_practice.setdefault(row.practice_id, []).append(row)
    for practice_id, practice_rows in by_practice.items():
        audit_record(
            event_type=EventType.OUTBOX_REDELIVERED,
            practice_id=practice_id,
            actor=actor,
            subject_type="outbox",
            subject_id=str(practice_rows[0].pk) if len(practice_rows) == 1 else "",
            payload={
                "count": len(practice_rows),
                "messages": [
                    {
                        "event_id": str(row.pk),
                        "event_type": row.event_type,
                        "destination": row.destination,
                        "previous_status": row.status,
                        "previous_attempts": row.attempts,
                        "last_error": row.last_error[:300],
                    }
                    for row in practice_rows
                ],
            },
        )
    from integrations.outbox import request_relay

    request_relay()
    return len(rows)


# --- Reading the latency back -------------------------------------------------------


def emission_latency_by_event_type(*, since: datetime) -> dict[str, dict[str, float]]:
    """Count, median, p95 and max seconds from written to delivered, per event type.

    Read from the table, so any process (an exporter, a report) can compute it
    without sharing the relay's in-process histogram.
    """
    rows = OutboxMessage.objects.filter(
        status=Status.DELIVERED, delivered_at__gte=since
    ).values_list("event_type", "occurred_at", "delivered_at")
    samples: dict[str, list[float]] = {}
    for event_type, occurred_at, delivered_at in rows.iterator():
        samples.setdefault(event_type, []).append((delivered_at - occurred_at).total_seconds())
    summary = {}
    for event_type, values in sorted(samples.items()):
        values.sort()
        summary[event_type] = {
            "count": len(values),
            "p50": values[(len(values) - 1) // 2],
            "p95": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))],
            "max": values[-1],
        }
    return summary
