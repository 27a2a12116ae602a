"""Every outbound event type the code can emit, delivered for real and matching its documented example.

The list is `integrations.catalog.OUTBOUND_EVENTS` (outbox_enqueue refuses
anything else). For each entry a scenario drives the real services until the
message is written, the real relay posts it over HTTP to the local receiver
(`MessageSink`, or the PMS simulator), and the test checks what arrived: the
signature verifies with that module's secret over the event id and body, the
envelope carries the type and id, the payload has the scenario's values, and
its keys are exactly those of the example in docs/contracts.md. A new event
type without a scenario or a documented example fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.actors import Actor
from integrations.catalog import OUTBOUND_EVENTS, OutboundEvent
from integrations.models import Destination, OutboxMessage
from integrations.relay import relay_until_idle
from integrations.signing import verify
from payments import deposits, disputes, flows, links, overdue, services
from payments.models import Payment, PaymentMethod, TargetType
from payments.services import RewardsCredit, TenderSpec
from practices.models import PmsWritebackMode
from practices.roles import Role
from subscriptions.models import SubscriptionMandate
from tests.docs_examples import outbound_examples, same_shape
from tests.factories import make_staff
from tests.integrations.conftest import SECRETS, capture_payment, create_payment, module_path
from tests.providers.conftest import dna, http  # noqa: F401
from tests.subscriptions.conftest import deliver, gc_api, publish, scenario  # noqa: F401

pytestmark = pytest.mark.django_db

D = Destination
PROVIDER = Actor.provider("dna")
SYSTEM = Actor.system("appointment_manager")


@dataclass
class World:
    request: pytest.FixtureRequest
    practice: object
    site: object
    patient: object

    @property
    def manager(self) -> Actor:
        return Actor.staff(make_staff(Role.REFUND_MANAGER, practice=self.practice))

    def captured(self, **extra) -> Payment:
        return capture_payment(SYSTEM, PROVIDER, self.practice, self.site, self.patient, **extra)


def _ids(payment) -> dict:
    return {"payment_id": str(payment.id)}


# --- Scenarios: each makes the real code write the message, and says what it must carry --------


def captured_with_credit(w: World) -> dict:
    credit = RewardsCredit(amount=Decimal("20.00"), reference="RDM-5512")
    payment = w.captured(amount="120.00", rewards_credit=credit)
    return _ids(payment)


def refunded_in_part(w: World) -> dict:
    payment = w.captured(amount="80.00")
    refund = services.refund_request(
        payment_id=payment.id, actor=w.manager, amount="30.00", reason_code="billing_error"
    ).refund
    services.refund_complete(refund_id=refund.id, actor=PROVIDER, provider_reference="rf-1")
    return {**_ids(payment), "refund_amount": "30.00"}


def refunded_in_full(w: World) -> dict:
    payment = w.captured(amount="80.00")
    refund = services.refund_request(
        payment_id=payment.id, actor=w.manager, reason_code="patient_request"
    ).refund
    services.refund_complete(refund_id=refund.id, actor=PROVIDER)
    return {**_ids(payment), "refund_amount": "80.00"}


def _deposit(w: World, appointment_id="APT-88120"):
    return deposits.deposit_request(
        actor=SYSTEM,
        practice=w.practice,
        site=w.site,
        patient=w.patient,
        appointment_id=appointment_id,
        amount="75.00",
        channel="sms",
    )


def deposit_settled(outcome: str) -> Callable[[World], dict]:
    def run(w: World) -> dict:
        deposit = _deposit(w)
        services.payment_capture(payment_id=deposit.payment_id, actor=PROVIDER)
        deposits.deposit_record_attendance(
            actor=SYSTEM, practice=w.practice, appointment_id="APT-88120", outcome=outcome
        )
        return {"deposit_id": str(deposit.id), "attendance_outcome": outcome}

    return run


def _link(w: World, **details):
    """A payment link issued by a system trigger (an invoice of 45.50 unless told otherwise)."""
    request = {"target_type": TargetType.INVOICE, "target_id": "INV-2001", "amount": "45.50"}
    return flows.pay_by_link_issue(
        actor=SYSTEM,
        practice=w.practice,
        site=w.site,
        patient=w.patient,
        **{**request, **details},
    )


def link_issued(w: World) -> dict:
    issued = _link(w, channel="sms")
    return {**_ids(issued.link.payment), "link_id": str(issued.link.id), "url": issued.url}


def link_reissue_requested(w: World) -> dict:
    issued = _link(w)
    links.payment_link_cancel(link_id=issued.link.id, actor=SYSTEM)
    assert links.payment_link_request_reissue(token=issued.token)
    return {"link_id": str(issued.link.id), "link_status": "cancelled"}


def overdue_link(escalate: bool) -> Callable[[World], dict]:
    def run(w: World) -> dict:
        due = timezone.now() + timedelta(hours=1)
        issued = _link(
            w,
            target_type=TargetType.PAYMENT_REQUEST,
            target_id="REQ-301",
            amount="49.00",
            due_at=due,
        )
        days = [3] + ([7, 14, 15] if escalate else [])
        for day in days:
            overdue.overdue_process(now=due + timedelta(days=day, hours=1))
        return _ids(issued.link.payment)

    return run


def failed(w: World) -> dict:
    payment = create_payment(SYSTEM, w.practice, w.site, w.patient)
    services.payment_fail(payment_id=payment.id, actor=PROVIDER, code="declined", reason="No")
    return {"failure_code": "declined", "detail": "No"}


def exception_flagged(w: World) -> dict:
    payment = w.captured()
    services.payment_flag_exception(
        payment_id=payment.id,
        actor=PROVIDER,
        code="decline_after_capture",
        detail="DNA reported a decline for a captured payment.",
        reference="txn-9",
    )
    return {"exception_code": "decline_after_capture", "provider_reference": "txn-9"}


def disputed(w: World) -> dict:
    payment = w.captured()
    disputes.payment_flag_dispute(
        payment_id=payment.id, actor=PROVIDER, reason="Chargeback", provider_reference="CB-1"
    )
    return {"dispute_reference": "CB-1", "detail": "Chargeback"}


def refund_failed(w: World) -> dict:
    payment = w.captured()
    refund = services.refund_request(
        payment_id=payment.id, actor=w.manager, amount="10.00", reason_code="other"
    ).refund
    services.refund_fail(refund_id=refund.id, actor=PROVIDER, reason="Card account closed")
    return {"refund_id": str(refund.id), "detail": "Card account closed"}


def approval_required(w: World) -> dict:
    payment = w.captured(amount="300.00")
    approval = services.refund_request(
        payment_id=payment.id, actor=w.manager, reason_code="other"
    ).approval
    return {"approval_id": str(approval.id), "amount": "300.00"}


def writeback_fell_back(w: World) -> dict:
    w.practice.pms_writeback_mode = PmsWritebackMode.UNSUPPORTED
    w.practice.save(update_fields=["pms_writeback_mode"])
    payment = w.captured()
    return {"payment_ids": [str(payment.id)], "invoice_ref": "INV-2001"}


def pending_marker(w: World) -> dict:
    w.practice.pms_writeback_mode = PmsWritebackMode.PENDING_MARKER
    w.practice.save(update_fields=["pms_writeback_mode"])
    return _ids(create_payment(SYSTEM, w.practice, w.site, w.patient))


def split_settled(w: World) -> dict:
    staff = Actor.staff(make_staff(Role.RECEPTION, practice=w.practice))
    split = services.split_create(
        actor=staff,
        practice=w.practice,
        site=w.site,
        patient=w.patient,
        target_type=TargetType.INVOICE,
        target_id="INV-2002",
        amount_due="100.00",
        tenders=[
            TenderSpec(PaymentMethod.CASH, Decimal("60.00")),
            TenderSpec(PaymentMethod.VOUCHER, Decimal("40.00")),
        ],
    )
    for tender in Payment.objects.filter(split=split):
        services.tender_record_received(payment_id=tender.id, actor=staff)
    return {"split_id": str(split.id)}


def supplier(outcome: str) -> Callable[[World], dict]:
    def run(w: World) -> dict:
        payment = services.supplier_payment_create(
            actor=Actor.system("inventory_manager"),
            practice=w.practice,
            site=w.site,
            purchase_order_id="PO-5501",
            supplier_invoice_id="SUP-INV-88",
            supplier_name="Dental Supplies Ltd",
            amount="312.40",
            payment_profile_id="dna-practice-card",
        )
        if outcome == "failed":
            services.payment_fail(payment_id=payment.id, actor=PROVIDER, code="declined", reason="")
        else:
            services.payment_capture(payment_id=payment.id, actor=PROVIDER)
        if outcome == "refunded":
            services.refund_request(
                payment_id=payment.id, actor=Actor.system("inventory_manager"), reason_code="other"
            )
            services.refund_complete(refund_id=payment.refunds.get().id, actor=PROVIDER)
        return {**_ids(payment), "purchase_order_id": "PO-5501"}

    return run


def phone_session(w: World) -> dict:
    w.request.getfixturevalue("dna")
    w.practice.telephony_enabled = True
    w.practice.virtual_terminal_enabled = True
    w.practice.save(update_fields=["telephony_enabled", "virtual_terminal_enabled"])
    operator = Actor.staff(make_staff(Role.VIRTUAL_TERMINAL_OPERATOR, practice=w.practice))
    session = flows.virtual_terminal_open(
        actor=operator,
        practice=w.practice,
        site=w.site,
        patient=w.patient,
        target_type=TargetType.INVOICE,
        target_id="INV-PHONE-1",
        amount="95.00",
    )
    flows.virtual_terminal_close(payment_id=session.payment.id, actor=operator, reason="cancelled")
    return _ids(session.payment)


def subscription(name: str, module: str = "care_plan") -> Callable[[World], dict]:
    def run(w: World) -> dict:
        api = w.request.getfixturevalue("gc_api")
        built = scenario(name, w.practice, w.patient, module=module, mandate_ref="MD-PRIMORO-0042")
        publish(api, built)
        w.request.getfixturevalue("deliver")(built.events)
        return {"subscription_module": module, "payment_mandate_ref": "MD-PRIMORO-0042"}

    return run


def subscription_failed_task(w: World) -> dict:
    facts = subscription("payment_failed")(w)
    return {f"subscription_payment.{field}": value for field, value in facts.items()}


def mandate_stopped_task(w: World) -> dict:
    facts = subscription("mandate_cancelled")(w)
    return {
        "task_type": "subscription_mandate_stopped",
        **{f"subscription_mandate.{field}": value for field, value in facts.items()},
    }


def webhook_event_parked(w: World) -> dict:
    """A signed GoCardless event our code cannot store (an id past the records' 64 characters)."""
    w.request.getfixturevalue("settings").WEBHOOK_MAX_ERROR_ATTEMPTS = 1
    subscription("mandate_active")(w)
    api = w.request.getfixturevalue("gc_api")
    mandate_id = SubscriptionMandate.objects.get().gocardless_mandate_id
    broken = scenario("mandate_cancelled", w.practice, w.patient, mandate_id=mandate_id)
    broken.events[0]["id"] = "EV" + "X" * 70
    publish(api, broken)
    w.request.getfixturevalue("deliver")(broken.events)
    return {
        "provider": "gocardless",
        "event_id": broken.events[0]["id"],
        "event_type": "mandates.cancelled",
        "resource_ref": mandate_id,
        "attempts": 1,
    }


def _by_key(*pairs) -> dict[str, Callable[[World], dict]]:
    return {f"{dest}:{rest}": run for dest, rest, run in pairs}


SCENARIOS: dict[str, Callable[[World], dict]] = _by_key(
    (D.FINANCIAL_INSIGHTS, "payment.captured", captured_with_credit),
    (D.FINANCIAL_INSIGHTS, "payment.partially_refunded", refunded_in_part),
    (D.FINANCIAL_INSIGHTS, "payment.refunded", refunded_in_full),
    (D.FINANCIAL_INSIGHTS, "deposit.converted", deposit_settled("attended")),
    (D.FINANCIAL_INSIGHTS, "deposit.forfeited", deposit_settled("no_show")),
    (D.FINANCIAL_INSIGHTS, "subscription.payment.received", subscription("payment_confirmed")),
    (D.FINANCIAL_INSIGHTS, "subscription.payment.failed", subscription("payment_failed")),
    (D.CARE_PLAN, "subscription.payment.received", subscription("payment_confirmed")),
    (D.CARE_PLAN, "subscription.payment.failed", subscription("payment_failed")),
    (D.HYGIENE, "subscription.payment.received", subscription("payment_confirmed", "hygiene")),
    (D.HYGIENE, "subscription.payment.failed", subscription("payment_failed", "hygiene")),
    *(
        (module, f"subscription.mandate.{status}", subscription(f"mandate_{status}", module))
        for module in (D.CARE_PLAN, D.HYGIENE)
        for status in ("failed", "blocked", "cancelled", "expired")
    ),
    (D.REWARDS_MANAGER, "rewards.redemption", captured_with_credit),
    (D.COMMUNICATION_HUB, "receipt.requested", captured_with_credit),
    (D.COMMUNICATION_HUB, "payment_link.deliver", link_issued),
    (D.COMMUNICATION_HUB, "payment_reminder.requested", overdue_link(escalate=False)),
    (D.TASK_MANAGER, "task.create:payment_failed", failed),
    (D.TASK_MANAGER, "task.create:payment_exception", exception_flagged),
    (D.TASK_MANAGER, "task.create:payment_disputed", disputed),
    (D.TASK_MANAGER, "task.create:refund_failed", refund_failed),
    (D.TASK_MANAGER, "task.create:approval_required", approval_required),
    (D.TASK_MANAGER, "task.create:overdue_balance", overdue_link(escalate=True)),
    (D.TASK_MANAGER, "task.create:pms_writeback_fallback", writeback_fell_back),
    (D.TASK_MANAGER, "task.create:subscription_payment_failed", subscription_failed_task),
    (D.TASK_MANAGER, "task.create:subscription_mandate_stopped", mandate_stopped_task),
    (D.TASK_MANAGER, "task.create:webhook_event_parked", webhook_event_parked),
    (
        D.TASK_MANAGER,
        "payment_link.reissue_requested:payment_link_reissue",
        link_reissue_requested,
    ),
    (D.INVENTORY, "supplier_payment.executed", supplier("executed")),
    (D.INVENTORY, "supplier_payment.failed", supplier("failed")),
    (D.INVENTORY, "supplier_payment.refunded", supplier("refunded")),
    (D.TELEPHONY, "call_recording.mute", phone_session),
    (D.TELEPHONY, "call_recording.unmute", phone_session),
    (D.PMS, "payment.pending", pending_marker),
    (D.PMS, "payment.captured", captured_with_credit),
    (D.PMS, "split.settled", split_settled),
    (D.PMS, "refund.completed", refunded_in_part),
    (D.PMS, "subscription.payment.paid_out", subscription("payment_paid_out")),
)
DOCUMENTED = outbound_examples()


def _received(event: OutboundEvent, sink, pms_sim):
    receiver = pms_sim if event.destination == D.PMS else sink
    return [
        r
        for r in receiver.stored.values()
        if r.path.startswith(module_path(event.destination) if receiver is sink else "/writebacks")
        and r.event_type == event.event_type
        and r.document["payload"].get("task_type", "") == event.task_type
    ]


def test_every_registered_event_has_a_scenario_and_a_documented_example():
    keys = {event.key for event in OUTBOUND_EVENTS}

    assert keys - set(SCENARIOS) == set(), "registered but never delivered in a test"
    assert keys - set(DOCUMENTED) == set(), "registered but with no example in docs/contracts.md"
    assert set(SCENARIOS) - keys == set() and set(DOCUMENTED) - keys == set()


@pytest.mark.parametrize("event", OUTBOUND_EVENTS, ids=[e.key for e in OUTBOUND_EVENTS])
def test_each_event_type_is_delivered_signed_and_as_documented(
    event, request, relay_settings, sink, pms_sim, practice, site, patient
):
    expected = SCENARIOS[event.key](World(request, practice, site, patient))

    relay_until_idle(time_budget=30)

    received = _received(event, sink, pms_sim)
    assert received, f"{event.key} was not delivered"
    message = received[-1]
    row = OutboxMessage.objects.get(pk=message.event_id)
    assert (row.destination, row.status) == (event.destination, OutboxMessage.Status.DELIVERED)
    assert message.signature_valid is True
    verify(
        SECRETS[event.destination],
        message.headers["x-primoro-signature"],
        message.body,
        event_id=message.event_id,
    )
    document = message.document
    assert (document["event_id"], document["type"]) == (str(row.id), event.event_type)
    assert document["practice_id"] == str(practice.id)
    payload = document["payload"]
    assert payload == row.payload
    for field, value in expected.items():
        found = payload
        for part in field.split("."):
            found = found[part]
        assert found == value, field
    assert same_shape(payload, DOCUMENTED[event.key]) == []
    if event.destination == D.PMS:
        assert document["writeback"]["kind"] in ("paid", "pending", "refund")
