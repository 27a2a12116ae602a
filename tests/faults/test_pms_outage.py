"""The PMS goes away for a while (no answer, then 503 maintenance) and comes back.

Invariant: after recovery every writeback is delivered exactly once (the PMS
records each event id once), in order per payment (a refund after its
payment), every payment ends `written`, and the outage alone creates no
fallback task and no `pms_writeback.failed` audit event: waiting out an outage
within the retry budget is not a failure. Meanwhile the other modules keep
receiving their messages: one dead destination does not hold up the rest.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from integrations.pms.services import FALLBACK_TASK_TYPE
from integrations.relay import relay_due
from payments import services
from payments.models import Payment, PaymentMethod, PmsWritebackStatus
from tests.integrations.conftest import capture_payment, create_payment

pytestmark = pytest.mark.django_db

Status = OutboxMessage.Status
CARD, CASH, REFUNDED = 6, 3, 3


def _relay_for(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        relay_due()
        time.sleep(0.05)


def test_every_writeback_is_delivered_once_after_the_pms_comes_back(
    relay_settings,
    sink,
    pms_sim,
    practice,
    site,
    patient,
    system_actor,
    provider_actor,
    reception_actor,
    manager_actor,
):
    relay_settings.OUTBOX_MAX_ATTEMPTS = 100  # an outage, not a broken endpoint
    relay_settings.OUTBOX_BACKOFF_BASE_SECONDS = 0.02
    relay_settings.OUTBOX_BACKOFF_CAP_SECONDS = 0.1
    pms_sim.mode = "drop"  # first the PMS does not answer at all
    payments = [
        capture_payment(system_actor, provider_actor, practice, site, patient, target_id=f"C-{n}")
        for n in range(CARD)
    ]
    for n in range(CASH):
        cash = create_payment(
            reception_actor, practice, site, patient, method=PaymentMethod.CASH, target_id=f"K{n}"
        )
        services.tender_record_received(payment_id=cash.id, actor=reception_actor)
        payments.append(cash)
    cash_payments = [p.id for p in payments[CARD:]]
    for payment_id in cash_payments[:REFUNDED]:
        services.refund_request(
            payment_id=payment_id, actor=manager_actor, amount="15.00", reason_code="billing_error"
        )
    _relay_for(0.6)
    pms_sim.mode = "down"  # then it answers 503: in maintenance
    _relay_for(0.6)

    pms_rows = OutboxMessage.objects.filter(destination=Destination.PMS)
    assert pms_rows.count() == CARD + CASH + REFUNDED
    assert set(pms_rows.values_list("status", flat=True)) == {Status.PENDING}
    # It was tried again and again (one call per pass: the rest of a failing destination's
    # batch waits without a call), and recorded nothing.
    assert len(pms_sim.received) >= 4
    assert pms_sim.writebacks == []
    assert not OutboxMessage.objects.exclude(destination=Destination.PMS).filter(
        status=Status.PENDING
    )  # every other module got its messages during the outage
    assert {r.signature_valid for r in sink.received} == {True}

    pms_sim.mode = "ok"
    deadline = time.monotonic() + 20
    while pms_rows.filter(status=Status.PENDING).exists():
        assert time.monotonic() < deadline, "the relay did not drain the PMS backlog"
        relay_due()
        time.sleep(0.05)

    assert set(pms_rows.values_list("status", flat=True)) == {Status.DELIVERED}
    recorded = Counter(w["event_id"] for w in pms_sim.writebacks)
    assert recorded == dict.fromkeys((str(r.id) for r in pms_rows), 1)
    for payment_id in cash_payments[:REFUNDED]:
        kinds = [
            w["writeback"]["kind"]
            for w in pms_sim.writebacks
            if w["writeback"]["payment_ids"] == [str(payment_id)]
        ]
        assert kinds == ["paid", "refund"]
    assert set(
        Payment.objects.filter(id__in=[p.id for p in payments]).values_list(
            "pms_writeback_status", flat=True
        )
    ) == {PmsWritebackStatus.WRITTEN}
    assert not OutboxMessage.objects.filter(payload__task_type=FALLBACK_TASK_TYPE).exists()
    assert not AuditEvent.objects.filter(event_type=EventType.PMS_WRITEBACK_FAILED).exists()
