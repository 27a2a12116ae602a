"""Shorthands for building payments through the real service layer in tests."""

from __future__ import annotations

from payments import services
from payments.models import PaymentMethod, TargetType


def new_payment(
    actor,
    practice,
    site,
    patient,
    *,
    method=PaymentMethod.TERMINAL,
    terminal=None,
    amount="100.00",
    target_type=TargetType.INVOICE,
    target_id="INV-100",
    **extra,
):
    return services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=target_type,
        target_id=target_id,
        amount=amount,
        method=method,
        terminal=terminal,
        **extra,
    )


def captured(actor, provider, practice, site, patient, *, terminal, amount="100.00", **extra):
    payment = new_payment(actor, practice, site, patient, terminal=terminal, amount=amount, **extra)
    services.payment_await_customer(
        payment_id=payment.id, actor=provider, provider_reference=f"txn-{payment.id.hex[:12]}"
    )
    return services.payment_capture(payment_id=payment.id, actor=provider).payment
