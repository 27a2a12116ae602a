"""Guardian signals: the allow-list, the sources and the cursor-paged feed.

A signal is one lifecycle fact: a transition (from the audit trail, which
records every state change of §3.2 and §3.3) or a current state (from the
live record, so a state no transition has reached yet, such as `proposed`, is
visible too). Every signal has exactly the keys in SIGNAL_FIELDS:

    signal_id, source, subject_type, practice_id, site_id, terminal_id,
    payment_id, state, transition ({"from", "to"} or null), amount, currency,
    provider_reference, mandate_reference, occurred_at

The feed is ordered by (occurred_at, source, key) and paged with an opaque
cursor over that order; a source fetches only what follows the cursor.
Values are copied from named attributes only and pass through the card-number
redactor as a last guard (a provider reference that looked like a card number
would be replaced, never shown).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from audit.models import AuditEvent, EventType
from payments.models import Payment
from primoro_payments.pan import redact_value

SIGNAL_FIELDS = (
    "signal_id",
    "source",
    "subject_type",
    "practice_id",
    "site_id",
    "terminal_id",
    "payment_id",
    "state",
    "transition",
    "amount",
    "currency",
    "provider_reference",
    "mandate_reference",
    "occurred_at",
)
MAX_PAGE = 500


@dataclass(frozen=True)
class Cursor:
    """A position in the feed: after this signal."""

    at: datetime
    source: str
    key: str

    def encode(self) -> str:
        raw = json.dumps([self.at.isoformat(), self.source, self.key]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            at, source, key = json.loads(raw)
            parsed = aware_utc(at)
        except (ValueError, TypeError):
            raise ValueError("Invalid cursor.") from None
        if parsed is None or not isinstance(source, str):
            raise ValueError("Invalid cursor.")
        return cls(at=parsed, source=source, key=str(key))


def aware_utc(text: str) -> datetime | None:
    """An ISO 8601 time with its offset, as UTC; None if it is not one or cannot be in UTC.

    PostgreSQL takes offsets up to ±15:59 only, and a time near year 1 may not
    exist in UTC: both would otherwise fail in the query.
    """
    try:
        value = parse_datetime(text)
        if value is None or value.tzinfo is None:
            return None
        return value.astimezone(UTC)
    except (ValueError, OverflowError):  # well-formed but impossible, e.g. month 13
        return None


@dataclass(frozen=True)
class Signal:
    source: str
    key: str  # orders signals of one source with the same time
    occurred_at: datetime
    subject_type: str
    practice_id: object
    state: str
    site_id: object = None
    terminal_id: object = None
    payment_id: object = None
    from_state: str | None = None
    to_state: str | None = None
    amount: object = None
    currency: str = ""
    provider_reference: str = ""
    mandate_reference: str = ""

    @property
    def cursor(self) -> Cursor:
        return Cursor(at=self.occurred_at, source=self.source, key=self.key)

    @property
    def sort_key(self) -> tuple:
        return (self.occurred_at, self.source, self.key)

    def as_dict(self) -> dict:
        """The published form: exactly SIGNAL_FIELDS, each from a named attribute."""
        values = {
            "signal_id": f"{self.source}:{self.key}",
            "source": self.source,
            "subject_type": self.subject_type,
            "practice_id": _text(self.practice_id),
            "site_id": _text(self.site_id),
            "terminal_id": _text(self.terminal_id),
            "payment_id": _text(self.payment_id),
            "state": self.state,
            "transition": (
                {"from": self.from_state or None, "to": self.to_state}
                if self.to_state is not None
                else None
            ),
            "amount": _text(self.amount),
            "currency": self.currency or None,
            "provider_reference": self.provider_reference or None,
            "mandate_reference": self.mandate_reference or None,
            "occurred_at": self.occurred_at.isoformat(),
        }
        return redact_value(values)


def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True)
class Query:
    after: Cursor | None
    since: datetime | None
    until: datetime
    practice_ids: frozenset | None  # None: every practice
    limit: int


class SignalSource(Protocol):
    name: str

    def fetch(self, query: Query) -> list[Signal]:
        """Up to query.limit signals after the cursor, in (occurred_at, key) order."""


def after_cursor(
    queryset: QuerySet,
    query: Query,
    *,
    source: str,
    time_field: str,
    key_field: str,
    key_value: Callable[[str], object],
) -> QuerySet:
    """Limit a source's rows to the page window: since, until, practice, and after the cursor."""
    queryset = queryset.filter(**{f"{time_field}__lte": query.until})
    if query.since is not None:
        queryset = queryset.filter(**{f"{time_field}__gte": query.since})
    if query.practice_ids is not None:
        queryset = queryset.filter(practice_id__in=query.practice_ids)
    after = query.after
    if after is not None:
        if after.source < source:  # at the cursor's time, this source comes after it
            queryset = queryset.filter(**{f"{time_field}__gte": after.at})
        elif after.source > source:
            queryset = queryset.filter(**{f"{time_field}__gt": after.at})
        else:
            try:
                key = key_value(after.key)
            except ValueError:
                raise ValueError("Invalid cursor.") from None
            queryset = queryset.filter(
                Q(**{f"{time_field}__gt": after.at})
                | Q(**{time_field: after.at, f"{key_field}__gt": key})
            )
    return queryset.order_by(time_field, key_field)[: query.limit]


# --- The payment sources (§3.2) ----------------------------------------------------


PAYMENT_TRANSITION_EVENTS = (
    EventType.PAYMENT_INITIATED,
    EventType.PAYMENT_STATE_CHANGED,
    EventType.PAYMENT_REFUNDED,
    EventType.PAYMENT_PARTIALLY_REFUNDED,
    EventType.PAYMENT_VOIDED,
)


class AuditTransitionSource:
    """Transitions recorded in the audit trail, for the given audit event types."""

    def __init__(self, *, name: str, event_types: tuple, payment_subjects: tuple[str, ...]):
        self.name = name
        self.event_types = tuple(str(t) for t in event_types)
        self.payment_subjects = payment_subjects

    def fetch(self, query: Query) -> list[Signal]:
        rows = after_cursor(
            AuditEvent.objects.filter(event_type__in=self.event_types).exclude(to_state=""),
            query,
            source=self.name,
            time_field="occurred_at",
            key_field="id",
            key_value=int,
        ).values(
            "id",
            "occurred_at",
            "practice_id",
            "site_id",
            "terminal_id",
            "payment_id",
            "subject_type",
            "subject_id",
            "from_state",
            "to_state",
            "amount",
            "currency",
            "provider_reference",
            "mandate_reference",
        )
        return [
            Signal(
                source=self.name,
                key=f"{row['id']:020d}",
                occurred_at=row["occurred_at"],
                subject_type=row["subject_type"],
                practice_id=row["practice_id"],
                site_id=row["site_id"],
                terminal_id=row["terminal_id"],
                payment_id=row["payment_id"]
                or (row["subject_id"] if row["subject_type"] in self.payment_subjects else None),
                state=row["to_state"],
                from_state=row["from_state"],
                to_state=row["to_state"],
                amount=row["amount"],
                currency=row["currency"],
                provider_reference=row["provider_reference"],
                mandate_reference=row["mandate_reference"],
            )
            for row in rows
        ]


class CurrentStateSource:
    """The current state of each row of a model, paged by (updated_at, id).

    The model must have `id`, `practice_id`, `state`, `updated_at`; the other
    signal fields are read from the attributes named here (or left empty).
    Register one from an AppConfig.ready() for a record type of another app.
    """

    def __init__(
        self,
        *,
        name: str,
        queryset: Callable[[], QuerySet],
        subject_type: str,
        site_field: str | None = "site_id",
        terminal_field: str | None = None,
        amount_field: str | None = "amount",
        currency_field: str | None = "currency",
        provider_reference_field: str | None = None,
        mandate_reference_field: str | None = None,
    ):
        self.name = name
        self.queryset = queryset
        self.subject_type = subject_type
        self.fields = {
            "site_id": site_field,
            "terminal_id": terminal_field,
            "amount": amount_field,
            "currency": currency_field,
            "provider_reference": provider_reference_field,
            "mandate_reference": mandate_reference_field,
        }

    def fetch(self, query: Query) -> list[Signal]:
        named = [field for field in self.fields.values() if field]
        rows = after_cursor(
            self.queryset(),
            query,
            source=self.name,
            time_field="updated_at",
            key_field="id",
            key_value=uuid.UUID,
        ).values("id", "practice_id", "state", "updated_at", *named)
        signals = []
        for row in rows:
            extra = {
                signal_field: row[model_field] if model_field else None
                for signal_field, model_field in self.fields.items()
            }
            signals.append(
                Signal(
                    source=self.name,
                    key=str(row["id"]),
                    occurred_at=row["updated_at"],
                    subject_type=self.subject_type,
                    practice_id=row["practice_id"],
                    payment_id=row["id"],
                    state=row["state"],
                    site_id=extra["site_id"],
                    terminal_id=extra["terminal_id"],
                    amount=extra["amount"],
                    currency=extra["currency"] or "",
                    provider_reference=extra["provider_reference"] or "",
                    mandate_reference=extra["mandate_reference"] or "",
                )
            )
        return signals


def _payments() -> QuerySet:
    return Payment.objects.all()


BUILTIN_SOURCES: tuple = (
    AuditTransitionSource(
        name="payment.transition",
        event_types=PAYMENT_TRANSITION_EVENTS,
        payment_subjects=("payment",),
    ),
    # §3.3 transitions, written by subscriptions.services into the audit trail.
    AuditTransitionSource(
        name="subscription.transition",
        event_types=(EventType.SUBSCRIPTION_PAYMENT_STATUS_CHANGED,),
        payment_subjects=("subscription_payment",),
    ),
    CurrentStateSource(
        name="payment.state",
        queryset=_payments,
        subject_type="payment",
        terminal_field="terminal_id",
        provider_reference_field="provider_reference",
    ),
)

_REGISTERED: dict[str, SignalSource] = {}


def register_signal_source(source: SignalSource) -> None:
    """Add a source (from an AppConfig.ready()); registering a name again replaces it."""
    if any(source.name == builtin.name for builtin in BUILTIN_SOURCES):
        raise ValueError(f"{source.name} is a built-in source.")
    _REGISTERED[source.name] = source


def unregister_signal_source(name: str) -> None:
    _REGISTERED.pop(name, None)


def signal_sources() -> list[SignalSource]:
    return [*BUILTIN_SOURCES, *_REGISTERED.values()]


# --- The feed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalPage:
    signals: list[dict]
    next_cursor: str | None
    has_more: bool


def signals_page(query: Query) -> SignalPage:
    """One page of the merged feed, in (occurred_at, source, key) order."""
    limit = max(1, min(query.limit, MAX_PAGE))
    query = Query(
        after=query.after,
        since=query.since,
        until=query.until,
        practice_ids=query.practice_ids,
        limit=limit + 1,  # one more, to know whether there is more
    )
    merged = sorted(
        (signal for source in signal_sources() for signal in source.fetch(query)),
        key=lambda signal: signal.sort_key,
    )
    page = merged[:limit]
    last = page[-1].cursor if page else query.after
    return SignalPage(
        signals=[signal.as_dict() for signal in page],
        next_cursor=last.encode() if last else None,
        has_more=len(merged) > limit,
    )
