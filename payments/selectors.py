"""Reads of payments, always scoped to what the actor may see (tenant and site).

Lists use keyset pagination (a cursor on the sort key and id) so that a page
costs the same on the millionth payment as on the first, with a constant
number of queries.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import (
    BooleanField,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.aggregates import Aggregate
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce, JSONObject, TruncDate
from django.utils import timezone

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import communications
from payments.errors import NotFound, PaymentError
from payments.models import (
    PAID_STATES,
    ApprovalRequest,
    Payment,
    PaymentMethod,
    PaymentState,
    PmsWritebackStatus,
)
from practices import access
from practices.models import Patient

S = PaymentState


def payments_visible_to(user) -> QuerySet[Payment]:
    return access.scope(Payment.objects.all(), user).select_related("site", "patient", "terminal")


def payment_get_for(user, payment_id, *, related: tuple[str, ...] = ()) -> Payment:
    """One payment the user may see; anything else is 'not found', never 'forbidden'.

    `related` names one-to-one relations to fetch in the same query (e.g. "link").
    """
    try:
        return payments_visible_to(user).select_related(*related).get(pk=payment_id)
    except (Payment.DoesNotExist, ValueError, TypeError, ValidationError):  # malformed id: 404
        raise NotFound("No such payment.") from None


# --- Exceptions (§5.4, §13.4): one definition, used by lists, banners and dashboards ---

EXCEPTION_LABELS = {
    "failed": "Failed payments",
    "disputed": "Disputes and chargebacks",
    "pending_reconciliation": "Pending reconciliation",
    "pending_pms_writeback": "Pending PMS writeback",
}


def exception_condition(name: str, *, now: datetime | None = None) -> Q:
    now = now or timezone.now()
    grace = timedelta(hours=getattr(settings, "RECONCILIATION_GRACE_HOURS", 48))
    conditions = {
        "failed": Q(state=S.FAILED),
        "disputed": Q(disputed=True),
        # Paid but not matched into a settlement batch within the expected time.
        "pending_reconciliation": Q(state__in=[S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED])
        & Q(captured_at__lt=now - grace),
        "pending_pms_writeback": Q(
            pms_writeback_status__in=[PmsWritebackStatus.PENDING, PmsWritebackStatus.FALLBACK]
        ),
    }
    return conditions[name]


EXCEPTION_WINDOW_DAYS = 30


def exception_window_start(*, now: datetime | None = None) -> date:
    """The first whole day (UTC) the exception banners count.

    Whole days, so that the payments list filtered `date_from` this day shows
    exactly the payments a banner counts.
    """
    now = now or timezone.now()
    return now.astimezone(UTC).date() - timedelta(days=EXCEPTION_WINDOW_DAYS)


def exception_counts(user, *, since: date | None = None) -> dict[str, int]:
    """How many of the user's payments started on or after `since` are in each exception state (one query)."""
    since = since or exception_window_start()
    queryset = access.scope(Payment.objects.filter(_date_range("created_at", since, None)), user)
    aggregates = {name: Count("pk", filter=exception_condition(name)) for name in EXCEPTION_LABELS}
    return queryset.aggregate(**aggregates)


@dataclass(frozen=True)
class ExceptionSummary:
    name: str
    label: str
    count: int
    date_from: date

    @property
    def query(self) -> str:
        """The payments list filter showing exactly the payments counted here."""
        return urlencode({"exception": self.name, "date_from": self.date_from.isoformat()})


def exception_summaries(user) -> list[ExceptionSummary]:
    """The §5.4 exception banners: each kind, its count since the window start, and its filter."""
    since = exception_window_start()
    counts = exception_counts(user, since=since)
    return [
        ExceptionSummary(name=name, label=label, count=counts[name], date_from=since)
        for name, label in EXCEPTION_LABELS.items()
    ]


# --- Patients and their payment badges (§5.4) -------------------------------------------

PATIENTS_SHOWN = 50


def patients_with_badges(user, *, q: str = "", limit: int = PATIENTS_SHOWN) -> list[Patient]:
    """Patients of the user's practices (a name or PMS id search), each with its badges.

    Annotated from the payments the user may see (their sites only), in one
    query however many patients are listed: `latest_state` (the newest
    payment's state), `outstanding` (the sum of open balances, as
    `payments.balances` defines them), `has_failed` (a failed payment not
    retried), `has_disputed` and `has_in_progress` (awaiting the patient or the
    provider).
    """
    from payments.balances import balance_condition

    now = timezone.now()
    theirs = access.scope(Payment.objects.filter(patient_id=OuterRef("pk")), user)
    found = Patient.objects.filter(practice_id__in=access.practice_ids_for(user)).select_related(
        "practice"
    )
    q = q.strip()
    if q:
        found = found.filter(Q(display_name__icontains=q) | Q(pms_patient_id=q))
    outstanding = (
        theirs.filter(balance_condition(now))
        .order_by()
        .values("patient_id")
        .annotate(total=Sum(F("amount") - Coalesce(F("rewards_credit_applied"), Decimal("0"))))
        .values("total")
    )
    return list(
        found.annotate(
            latest_state=Subquery(theirs.order_by("-created_at", "-id").values("state")[:1]),
            outstanding=Subquery(outstanding),
            has_failed=Exists(
                theirs.filter(state=S.FAILED).exclude(
                    Exists(Payment.objects.filter(retry_of=OuterRef("pk")))
                )
            ),
            has_disputed=Exists(theirs.filter(disputed=True)),
            has_in_progress=Exists(
                theirs.filter(state__in=[S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED])
            ),
        ).order_by("display_name", "id")[:limit]
    )


# --- The payments list ---------------------------------------------------------

SORTS = {
    "newest": ("-created_at", "-id"),
    "oldest": ("created_at", "id"),
    "amount_high": ("-amount", "-id"),
    "amount_low": ("amount", "id"),
}


@dataclass(frozen=True)
class PaymentFilters:
    date_from: date | None = None
    date_to: date | None = None
    site_id: uuid.UUID | None = None
    staff_id: int | None = None
    method: str = ""
    state: str = ""
    target_type: str = ""
    exception: str = ""
    q: str = ""
    sort: str = "newest"


@dataclass(frozen=True)
class Page:
    rows: list
    next_cursor: str | None
    sort: str


def _encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


class InvalidCursor(PaymentError):
    """The `after` cursor is not one this list's sort gave out (edited, or from another sort)."""

    code = "invalid_cursor"

    def __init__(self):
        super().__init__("That page link is out of date. Start again from the first page.")
        self.field = "after"


def _decode_cursor(cursor: str, field: str, *, id_type=uuid.UUID) -> tuple:
    """(sort value, last id) from a cursor made by `_encode_cursor` for this sort field."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        value, last_id = values
        if field == "amount":
            value = Decimal(value)
            if not value.is_finite():
                raise ValueError(value)
        else:
            value = datetime.fromisoformat(value)
            if timezone.is_naive(value):
                raise ValueError(value)
        return value, id_type(last_id)
    except (ValueError, TypeError, ArithmeticError, AttributeError):
        # Bad base64 or JSON, a wrong shape, or a value of another sort.
        raise InvalidCursor() from None


# A name prefix matching at most this many patients is resolved to their ids first, so every
# branch of the search is an index look-up (fast for rare names and for references); a broader
# prefix is matched while walking the newest payments, which finds a page quickly anyway.
SEARCH_PATIENT_IDS_MAX = 200


def _search(queryset: QuerySet, q: str, user) -> QuerySet:
    """Exact payment id, target or provider reference; else the start of a patient's name."""
    q = q.strip()
    try:
        return queryset.filter(pk=uuid.UUID(q))
    except ValueError:
        pass
    references = Q(target_id=q) | Q(pms_invoice_ref=q) | Q(provider_reference=q)
    patient_ids = list(
        Patient.objects.filter(
            practice_id__in=access.practice_ids_for(user), display_name__istartswith=q
        ).values_list("id", flat=True)[: SEARCH_PATIENT_IDS_MAX + 1]
    )
    if len(patient_ids) > SEARCH_PATIENT_IDS_MAX:
        return queryset.filter(references | Q(patient__display_name__istartswith=q))
    return queryset.filter(references | Q(patient_id__in=patient_ids))


def _date_range(field: str, date_from: date | None, date_to: date | None) -> Q:
    """Whole days, both ends included: from the start of `date_from` to the end of `date_to` (UTC)."""
    condition = Q()
    if date_from:
        condition &= Q(**{f"{field}__gte": datetime.combine(date_from, time.min, tzinfo=UTC)})
    if date_to:
        end = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC)
        condition &= Q(**{f"{field}__lt": end})
    return condition


def payments_filtered(user, filters: PaymentFilters) -> QuerySet[Payment]:
    queryset = payments_visible_to(user).filter(
        _date_range("created_at", filters.date_from, filters.date_to)
    )
    if filters.site_id:
        queryset = queryset.filter(site_id=filters.site_id)
    if filters.staff_id:
        queryset = queryset.filter(initiated_by_user_id=filters.staff_id)
    if filters.method:
        queryset = queryset.filter(method=filters.method)
    if filters.state:
        queryset = queryset.filter(state=filters.state)
    if filters.target_type:
        queryset = queryset.filter(target_type=filters.target_type)
    if filters.exception in EXCEPTION_LABELS:
        queryset = queryset.filter(exception_condition(filters.exception))
    if filters.q:
        queryset = _search(queryset, filters.q, user)
    return queryset


def _keyset_page(
    queryset: QuerySet, *, key: str, cursor: str | None, size: int, id_type=uuid.UUID
) -> tuple[list, str | None]:
    """Rows after `cursor` in `key` order (then `id`, the same way), and the next cursor.

    Keyset pagination: no OFFSET and no COUNT, so a page costs the same deep in
    a large table. Raises InvalidCursor for a cursor this key did not give out.
    """
    field = key.lstrip("-")
    descending = key.startswith("-")
    queryset = queryset.order_by(key, "-id" if descending else "id")
    if cursor:
        value, last_id = _decode_cursor(cursor, field, id_type=id_type)
        after = "lt" if descending else "gt"
        queryset = queryset.filter(
            Q(**{f"{field}__{after}e": value}),  # a range the index scan can start from
            Q(**{f"{field}__{after}": value}) | Q(**{field: value, f"id__{after}": last_id}),
        )
    rows = list(queryset[: size + 1])
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    return rows, _encode_cursor([getattr(rows[-1], field), rows[-1].id])


def payments_page(
    user, filters: PaymentFilters, *, cursor: str | None = None, size: int = 50
) -> Page:
    """One page of the list, after `cursor` (keyset pagination; no OFFSET, no COUNT).

    Raises InvalidCursor (400 `invalid_cursor`) for a cursor this sort did not give out.
    """
    sort = filters.sort if filters.sort in SORTS else "newest"
    rows, next_cursor = _keyset_page(
        payments_filtered(user, filters), key=SORTS[sort][0], cursor=cursor, size=size
    )
    return Page(rows=rows, next_cursor=next_cursor, sort=sort)


def payment_audit_trail(payment: Payment) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(payment_id=payment.id).order_by("seq")


# --- Approvals and the refund / void log ----------------------------------------


def approvals_pending_for(user) -> QuerySet[ApprovalRequest]:
    return (
        access.scope(ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING), user)
        .select_related("payment", "payment__patient", "requested_by", "site")
        .order_by("created_at")
    )


REFUND_LOG_EVENTS = (
    EventType.PAYMENT_REFUNDED,
    EventType.PAYMENT_PARTIALLY_REFUNDED,
    EventType.PAYMENT_VOIDED,
)


def refund_void_log(
    user, *, actor_id: str = "", date_from=None, date_to=None, reason_code: str = ""
):
    """Refunds and voids, straight from the audit trail: who, when, how much, why."""
    events = access.scope(
        AuditEvent.objects.filter(event_type__in=REFUND_LOG_EVENTS), user, site_field="site"
    )
    if actor_id:
        events = events.filter(actor_id=actor_id)
    events = events.filter(_date_range("occurred_at", date_from, date_to))
    if reason_code:
        events = events.filter(reason_code=reason_code)
    return events.order_by("-occurred_at", "-id")


def refund_void_log_page(user, *, cursor: str | None = None, size: int = 50, **filters) -> Page:
    """One page of the log, newest first, after `cursor` (keyset, as the payments list).

    Raises InvalidCursor for a cursor this log did not give out.
    """
    rows, next_cursor = _keyset_page(
        refund_void_log(user, **filters), key="-occurred_at", cursor=cursor, size=size, id_type=int
    )
    return Page(rows=rows, next_cursor=next_cursor, sort="newest")


# --- The communications log ------------------------------------------------------


@dataclass(frozen=True)
class CommunicationFilters:
    date_from: date | None = None
    date_to: date | None = None
    event_type: str = ""
    status: str = ""


def communications_visible_to(user) -> QuerySet[OutboxMessage]:
    """Messages to Communication Hub at the user's practices, about payments at their sites.

    The row carries its practice; its site is its payment's. A message about no
    payment has no site, and is seen practice-wide like any row without one.
    """
    payment_in_scope = access.scope(Payment.objects.filter(pk=OuterRef("payment_id")), user)
    messages = OutboxMessage.objects.filter(destination=Destination.COMMUNICATION_HUB)
    return access.scope(messages, user, site_field=None).filter(
        Q(payment_id__isnull=True) | Exists(payment_in_scope)
    )


def communications_page(
    user, filters: CommunicationFilters, *, cursor: str | None = None, size: int = 50
) -> Page:
    """One page of the log, newest first (keyset, as the payments list), in two queries.

    The payload stays in the database: only communications.SHOWN_PAYLOAD_KEYS
    are read (a payment link's URL holds its token), and so does `last_error`
    (a refusal may echo the request). Raises InvalidCursor for a cursor this
    log did not give out.
    """
    messages = communications_visible_to(user).filter(
        _date_range("created_at", filters.date_from, filters.date_to)
    )
    if filters.event_type:
        messages = messages.filter(event_type=filters.event_type)
    if filters.status:
        messages = messages.filter(status=filters.status)
    shown = {key: KeyTransform(key, "payload") for key in communications.SHOWN_PAYLOAD_KEYS}
    messages = messages.defer("payload", "last_error").annotate(shown=JSONObject(**shown))
    rows, next_cursor = _keyset_page(messages, key="-created_at", cursor=cursor, size=size)
    payments = payments_visible_to(user).in_bulk({m.payment_id for m in rows if m.payment_id})
    return Page(
        rows=[communications.Communication(m, m.shown, payments.get(m.payment_id)) for m in rows],
        next_cursor=next_cursor,
        sort="newest",
    )


# --- Dashboards ------------------------------------------------------------------


def _rate(part, whole) -> float | None:
    return float(part / whole) if whole else None


@dataclass(frozen=True)
class DayStats:
    """One UTC day of payments started that day."""

    day: date
    payments: int = 0
    paid: int = 0
    failed: int = 0
    collected: Decimal = Decimal("0")
    refunded: Decimal = Decimal("0")
    median_seconds_to_capture: float | None = None

    @property
    def failure_rate(self) -> float | None:
        """Failed among finished attempts (paid or failed); None on a day with neither."""
        return _rate(self.failed, self.paid + self.failed)

    @property
    def refund_rate(self) -> float | None:
        """Refunded amount over collected amount; None on a day with nothing collected."""
        return _rate(self.refunded, self.collected)


@dataclass(frozen=True)
class MethodShare:
    method: str
    label: str
    count: int
    total: Decimal
    share: float  # of the amount collected


@dataclass(frozen=True)
class Dashboard:
    """Collection speed, method mix, failure and refund rates over whole UTC days.

    The headline numbers are the sums of `daily`, so a chart and its total agree.
    """

    days: int
    since: date
    daily: list[DayStats]
    median_seconds_to_capture: float | None
    method_mix: list[MethodShare]

    @property
    def payments(self) -> int:
        return sum(d.payments for d in self.daily)

    @property
    def paid(self) -> int:
        return sum(d.paid for d in self.daily)

    @property
    def failed(self) -> int:
        return sum(d.failed for d in self.daily)

    @property
    def collected(self) -> Decimal:
        return sum((d.collected for d in self.daily), Decimal("0"))

    @property
    def refunded(self) -> Decimal:
        return sum((d.refunded for d in self.daily), Decimal("0"))

    @property
    def failure_rate(self) -> float:
        return _rate(self.failed, self.paid + self.failed) or 0.0

    @property
    def refund_rate(self) -> float:
        return _rate(self.refunded, self.collected) or 0.0


class _Median(Aggregate):
    function = "PERCENTILE_CONT"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


def _seconds_to_capture():
    """Median start-to-capture time; NULL (ignored by the median) for payments not captured."""
    return _Median(
        ExpressionWrapper(F("captured_at") - F("created_at"), output_field=DurationField())
    )


def dashboard_for(user, *, days: int = 30, now: datetime | None = None) -> Dashboard:
    """The last `days` whole UTC days (today included) of the user's payments, in 3 queries.

    Per-day counts, amounts and median speed are aggregated by PostgreSQL
    (GROUP BY day), so the cost does not grow with the number of payments
    shown, only with the rows scanned.
    """
    today = (now or timezone.now()).astimezone(UTC).date()
    since = today - timedelta(days=days - 1)
    recent = access.scope(Payment.objects.filter(_date_range("created_at", since, None)), user)
    paid = Q(state__in=PAID_STATES)
    rows = {
        row["day"]: row
        for row in recent.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            payments=Count("pk"),
            paid=Count("pk", filter=paid),
            failed=Count("pk", filter=Q(state=S.FAILED)),
            collected=Sum("captured_amount", filter=paid),
            refunded=Sum("refunded_amount"),
            median=_seconds_to_capture(),
        )
        .order_by("day")
    }
    daily = []
    for offset in range(days):
        day = since + timedelta(days=offset)
        row = rows.get(day)
        if row is None:
            daily.append(DayStats(day=day))
            continue
        daily.append(
            DayStats(
                day=day,
                payments=row["payments"],
                paid=row["paid"],
                failed=row["failed"],
                collected=row["collected"] or Decimal("0"),
                refunded=row["refunded"] or Decimal("0"),
                median_seconds_to_capture=(
                    row["median"].total_seconds() if row["median"] is not None else None
                ),
            )
        )
    mix = list(
        recent.filter(paid)
        .values_list("method")
        .annotate(n=Count("pk"), total=Sum("captured_amount"))
        .order_by("-total", "method")
    )
    collected = sum((total for _method, _n, total in mix), Decimal("0"))
    median = recent.aggregate(m=_seconds_to_capture())["m"]
    return Dashboard(
        days=days,
        since=since,
        daily=daily,
        median_seconds_to_capture=median.total_seconds() if median is not None else None,
        method_mix=[
            MethodShare(
                method=method,
                label=PaymentMethod(method).label if method in PaymentMethod.values else method,
                count=n,
                total=total,
                share=_rate(total, collected) or 0.0,
            )
            for method, n, total in mix
        ],
    )


def payment_exceptions(user, *, kind: str | None = None, now: datetime | None = None):
    """Payments needing attention that the user may see: failed, disputed, unreconciled, unwritten.

    The conditions are `exception_condition`'s (the portal's banners and lists
    use the same). Each row is annotated `is_<kind>` for every kind in
    `EXCEPTION_LABELS`, since a payment can be several at once; `kind` narrows
    the list to one of them.
    """
    if kind is not None and kind not in EXCEPTION_LABELS:
        raise ValueError(f"Unknown exception kind {kind!r}.")
    conditions = {name: exception_condition(name, now=now) for name in EXCEPTION_LABELS}
    wanted = Q()
    for name in [kind] if kind else conditions:
        wanted |= conditions[name]
    flags = {
        f"is_{name}": ExpressionWrapper(condition, output_field=BooleanField())
        for name, condition in conditions.items()
    }
    return payments_visible_to(user).filter(wanted).annotate(**flags).order_by("-created_at", "-id")
