"""Row locks for the payment write path (select_for_update), always in primary-key order."""

from __future__ import annotations

from payments.errors import NotFound
from payments.models import ApprovalRequest, Payment, Refund, SplitPayment


def lock_payment(payment_id) -> Payment:
    try:
        return Payment.objects.select_for_update().get(pk=payment_id)
    except Payment.DoesNotExist:
        raise NotFound("No such payment.") from None


def lock_payments(payment_ids) -> list[Payment]:
    return list(Payment.objects.select_for_update().filter(pk__in=payment_ids).order_by("pk"))


def lock_split(split_id) -> SplitPayment:
    try:
        return SplitPayment.objects.select_for_update().get(pk=split_id)
    except SplitPayment.DoesNotExist:
        raise NotFound("No such split payment.") from None


def lock_refund(refund_id) -> Refund:
    try:
        return Refund.objects.select_for_update().get(pk=refund_id)
    except Refund.DoesNotExist:
        raise NotFound("No such refund.") from None


def lock_approval(approval_id) -> ApprovalRequest:
    try:
        return ApprovalRequest.objects.select_for_update().get(pk=approval_id)
    except ApprovalRequest.DoesNotExist:
        raise NotFound("No such approval request.") from None
