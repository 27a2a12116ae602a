"""Settlement: fetch DNA's payout batches, store them once, match them to our payments.

Where batches come from is one setting away: DNA_SETTLEMENT_SOURCE names a
class with `fetch_batches() -> list[BatchData]`. DNA's real report format is not
published; `SimulatorSettlementSource` reads the simulator's (GET /sim/settlements
on DNA_API_URL: {batches: [{batch_id, settled_at, currency, items: [{transactionId,
parentId, invoiceId, type, amount, fee, currency}], totals}]}, money as decimal
strings). A real source only has to produce the same dataclasses.

`reconcile_settlements()` (beat, and `manage.py reconcile_settlements`) stores
new batches and matches every item still pending:

- a sale matches the payment whose id is its invoiceId (dashed or hex) and
  whose DNA transaction is its transactionId, for the captured amount; the
  payment moves to reconciled (payments.services.payment_reconcile, with the
  batch reference);
- a refund matches our Refund with that provider reference and amount;
- anything else is an exception row (unknown transaction, amount, currency or
  state mismatch), kept for finance staff: `reconciliation_exceptions(user)`
  and the admin. A payment with a refund still pending at DNA waits for the
  next pass.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import httpx
import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from audit.actors import Actor
from integrations.dna.client import (
    DnaClient,
    DnaError,
    decode_json,
    parse_time,
    text,
    to_amount,
)
from integrations.dna.models import SettlementBatch, SettlementItem
from integrations.dna.selectors import owner_from_dna
from payments import services
from payments.disputes import payment_flag_dispute
from payments.errors import PaymentError
from payments.models import PAID_STATES, Payment, Provider, Refund
from practices.models import Practice

log = structlog.get_logger("integrations.dna.settlement")

RECONCILER = Actor.system("dna_reconciliation")
Item = SettlementItem


@dataclass(frozen=True)
class LineData:
    transaction_id: str
    parent_id: str
    invoice_id: str
    kind: str  # sale | refund | chargeback
    amount: Decimal
    fee: Decimal
    currency: str


@dataclass(frozen=True)
class BatchData:
    reference: str
    settled_at: datetime | None
    currency: str
    lines: list[LineData]
    sales: Decimal
    refunds: Decimal
    fees: Decimal
    net: Decimal


class SettlementSource(Protocol):
    def fetch_batches(self) -> list[BatchData]: ...


class SimulatorSettlementSource:
    """The simulator's batches (GET <DNA_API_URL>/sim/settlements)."""

    def __init__(self, base_url: str | None = None):
        self.base_url = (base_url or settings.DNA_API_URL).rstrip("/")

    def fetch_batches(self) -> list[BatchData]:
        timeout = httpx.Timeout(
            settings.DNA_HTTP_TIMEOUT_SECONDS, connect=settings.DNA_HTTP_CONNECT_TIMEOUT_SECONDS
        )
        try:
            response = httpx.get(f"{self.base_url}/sim/settlements", timeout=timeout)
            response.raise_for_status()
            data = decode_json(response.content)
        except (httpx.HTTPError, ValueError) as error:
            raise DnaError(f"settlements could not be fetched: {error}") from error
        return [self._batch(batch) for batch in data.get("batches") or []]

    @staticmethod
    def _batch(batch: dict) -> BatchData:
        totals = batch.get("totals") or {}
        return BatchData(
            reference=text(batch.get("batch_id")),
            settled_at=parse_time(batch.get("settled_at")),
            currency=text(batch.get("currency")) or "GBP",
            lines=[
                LineData(
                    transaction_id=text(item.get("transactionId")),
                    parent_id=text(item.get("parentId")),
                    invoice_id=text(item.get("invoiceId")),
                    kind=text(item.get("type")),
                    amount=to_amount(item.get("amount")),
                    fee=to_amount(item.get("fee") or "0", name="fee"),
                    currency=text(item.get("currency")),
                )
                for item in batch.get("items") or []
            ],
            sales=to_amount(totals.get("sales", "0")),
            refunds=to_amount(totals.get("refunds", "0")),
            fees=to_amount(totals.get("fees", "0")),
            net=to_amount(totals.get("net", "0")),
        )


def settlement_source() -> SettlementSource:
    return import_string(settings.DNA_SETTLEMENT_SOURCE)()


@dataclass
class ReconcileStats:
    batches_new: int = 0
    matched: int = 0
    exceptions: int = 0
    waiting: int = 0
    problems: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "batches_new": self.batches_new,
            "matched": self.matched,
            "exceptions": self.exceptions,
            "waiting": self.waiting,
        }


def _store(batch: BatchData, source: str) -> bool:
    """Store a batch and its items once; False if the batch was already stored.

    A transaction listed more than once in the batch is stored once and marked
    `duplicate_in_batch`, to be raised as an exception when it is matched: the
    batch may pay it twice, and which line is right is for finance staff to say.
    """
    if SettlementBatch.objects.filter(source=source, reference=batch.reference).exists():
        return False
    lines: dict[str, list[LineData]] = {}
    for line in batch.lines:
        lines.setdefault(line.transaction_id, []).append(line)
    try:
        with transaction.atomic():
            stored = SettlementBatch.objects.create(
                source=source,
                reference=batch.reference,
                settled_at=batch.settled_at,
                currency=batch.currency,
                total_sales=batch.sales,
                total_refunds=batch.refunds,
                total_fees=batch.fees,
                total_net=batch.net,
            )
            SettlementItem.objects.bulk_create(
                _item(stored, listed, batch.currency) for listed in lines.values()
            )
    except IntegrityError:
        # Only the batch reference is unique now: another pass stored it a moment ago.
        if SettlementBatch.objects.filter(source=source, reference=batch.reference).exists():
            return False
        raise
    for transaction_id, listed in lines.items():
        if len(listed) > 1:
            log.warning(
                "dna_settlement_duplicate_line",
                batch=batch.reference,
                transaction=transaction_id,
                times=len(listed),
            )
    return True


def _item(batch: SettlementBatch, listed: list[LineData], currency: str) -> SettlementItem:
    line = listed[0]
    item = SettlementItem(
        batch=batch,
        kind=line.kind if line.kind in Item.Kind.values else Item.Kind.SALE,
        transaction_id=line.transaction_id,
        parent_transaction_id=line.parent_id,
        invoice_id=line.invoice_id,
        amount=line.amount,
        fee=line.fee,
        currency=line.currency or currency,
    )
    if len(listed) > 1:
        amounts = ", ".join(str(other.amount) for other in listed)
        item.problem = Item.Problem.DUPLICATE_IN_BATCH
        item.detail = f"Listed {len(listed)} times in this batch (amounts {amounts})."[:255]
    return item


def reconcile_settlements(*, source: SettlementSource | None = None) -> ReconcileStats:
    """Fetch new batches and match every pending item; safe to run again at any time."""
    stats = ReconcileStats()
    for batch in (source or settlement_source()).fetch_batches():
        if _store(batch, Provider.DNA):
            stats.batches_new += 1
    pending = SettlementItem.objects.filter(status=Item.Status.PENDING).order_by("pk")
    with DnaClient() as dna:
        for item_id in pending.values_list("pk", flat=True):
            status = _match(item_id, dna)
            if status == Item.Status.MATCHED:
                stats.matched += 1
            elif status == Item.Status.EXCEPTION:
                stats.exceptions += 1
            else:
                stats.waiting += 1
    log.info("dna_reconciliation", **stats.as_dict())
    return stats


def _payment_for(invoice_id: str) -> Payment | None:
    try:
        payment_id = uuid.UUID(invoice_id.strip())
    except ValueError:
        return None
    return Payment.objects.filter(pk=payment_id, provider=Provider.DNA).first()


def _practice_from_dna(item: SettlementItem, dna: DnaClient) -> tuple[Practice | None, object]:
    """For an item we cannot match: whose is it? DNA's terminal id says (online or terminal)."""
    try:
        return owner_from_dna(item.invoice_id, dna)
    except DnaError:
        return None, None  # the exception row is kept either way; superusers see it


def _match(item_id: int, dna: DnaClient) -> str:
    with transaction.atomic():
        item = (
            SettlementItem.objects.select_for_update(skip_locked=True)
            .select_related("batch")
            .filter(pk=item_id, status=Item.Status.PENDING)
            .first()
        )
        if item is None:
            return "skipped"
        payment = _payment_for(item.invoice_id)
        if payment is None:
            practice, site_id = _practice_from_dna(item, dna)
            detail = f"No payment for invoiceId {item.invoice_id!r}."
            if item.problem == Item.Problem.DUPLICATE_IN_BATCH:
                detail = f"{item.detail} {detail}"
            return _exception(
                item,
                item.problem or Item.Problem.UNKNOWN_TRANSACTION,
                detail,
                practice=practice,
                site_id=site_id,
            )
        item.payment = payment
        item.practice_id = payment.practice_id
        item.site_id = payment.site_id
        if item.problem == Item.Problem.DUPLICATE_IN_BATCH:
            return _exception(item, Item.Problem.DUPLICATE_IN_BATCH, item.detail)
        earlier = _settled_before(item)
        if earlier is not None:
            return _exception(
                item,
                Item.Problem.SETTLED_TWICE,
                f"Transaction {item.transaction_id} was already settled in batch "
                f"{earlier.batch.reference}.",
            )
        if item.currency != payment.currency:
            return _exception(
                item,
                Item.Problem.CURRENCY_MISMATCH,
                f"Settled in {item.currency}, paid in {payment.currency}.",
            )
        if item.kind == Item.Kind.REFUND:
            return _match_refund(item, payment)
        if item.kind == Item.Kind.CHARGEBACK:
            return _chargeback(item, payment)
        return _match_sale(item, payment)


def _settled_before(item: SettlementItem) -> SettlementItem | None:
    """The same transaction in an earlier batch: settling it again would count the money twice."""
    return (
        SettlementItem.objects.filter(transaction_id=item.transaction_id, kind=item.kind)
        .exclude(batch_id=item.batch_id)
        .filter(batch_id__lt=item.batch_id)
        .select_related("batch")
        .order_by("batch_id")
        .first()
    )


def _chargeback(item: SettlementItem, payment: Payment) -> str:
    """A cardholder disputed the payment: flag it (exception + task), keep the item in view."""
    payment_flag_dispute(
        payment_id=payment.id,
        actor=RECONCILER,
        reason=f"Chargeback of {item.amount} {item.currency} reported by DNA in batch {item.batch.reference}.",
        provider_reference=item.transaction_id,
    )
    return _exception(
        item,
        Item.Problem.CHARGEBACK,
        f"Chargeback of {item.amount}: the payment is flagged as disputed.",
    )


def _match_sale(item: SettlementItem, payment: Payment) -> str:
    if payment.provider_reference and payment.provider_reference != item.transaction_id:
        return _exception(
            item,
            Item.Problem.UNKNOWN_TRANSACTION,
            f"Transaction {item.transaction_id} is not this payment's "
            f"({payment.provider_reference}).",
        )
    if payment.state not in PAID_STATES:
        return _exception(
            item,
            Item.Problem.STATE_MISMATCH,
            f"DNA settled this payment but it is {payment.state} in Primoro.",
        )
    if item.amount != payment.captured_amount:
        return _exception(
            item,
            Item.Problem.AMOUNT_MISMATCH,
            f"Settled {item.amount}, captured {payment.captured_amount}.",
        )
    return _reconcile(item, payment)


def _match_refund(item: SettlementItem, payment: Payment) -> str:
    refund = Refund.objects.filter(payment=payment, provider_reference=item.transaction_id).first()
    if refund is None:
        pending = payment.refunds.filter(status=Refund.Status.PENDING).exists()
        if pending:
            item.detail = "Waiting for a refund still pending at DNA."
            item.save(update_fields=["payment", "practice", "site", "detail"])
            return Item.Status.PENDING
        return _exception(
            item,
            Item.Problem.UNKNOWN_TRANSACTION,
            f"No refund {item.transaction_id} on this payment.",
        )
    item.refund = refund
    if item.amount != refund.amount:
        return _exception(
            item, Item.Problem.AMOUNT_MISMATCH, f"Settled {item.amount}, refunded {refund.amount}."
        )
    return _reconcile(item, payment)


def _reconcile(item: SettlementItem, payment: Payment) -> str:
    try:
        services.payment_reconcile(
            payment_id=payment.id, actor=RECONCILER, batch_reference=item.batch.reference
        )
    except PaymentError as error:
        # e.g. a refund still pending at DNA: the next pass tries again.
        item.detail = error.message[:255]
        item.save(update_fields=["payment", "practice", "site", "refund", "detail"])
        return Item.Status.PENDING
    item.status = Item.Status.MATCHED
    item.problem = Item.Problem.NONE
    item.detail = ""
    item.matched_at = timezone.now()
    item.save(
        update_fields=[
            "payment",
            "practice",
            "site",
            "refund",
            "status",
            "problem",
            "detail",
            "matched_at",
        ]
    )
    return Item.Status.MATCHED


def _exception(
    item: SettlementItem, problem: str, detail: str, *, practice=None, site_id=None
) -> str:
    if practice is not None:
        item.practice = practice
        item.site_id = site_id
    item.status = Item.Status.EXCEPTION
    item.problem = problem
    item.detail = detail[:255]
    item.save(
        update_fields=["payment", "practice", "site", "refund", "status", "problem", "detail"]
    )
    log.warning(
        "dna_settlement_exception",
        item=item.pk,
        problem=problem,
        batch=item.batch.reference,
    )
    return Item.Status.EXCEPTION
