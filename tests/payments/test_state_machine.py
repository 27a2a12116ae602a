"""Random operation sequences against the service layer, checking the §3.2 invariants after every step.

The machine keeps its own model of what each payment should be — written here
from the spec, not from payments/models.py — and compares the database with it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from audit.actors import Actor
from audit.models import AuditEvent
from payments import services
from payments.errors import PaymentError
from payments.models import Payment, Refund
from practices.roles import Role
from tests.factories import (
    PatientFactory,
    PracticeFactory,
    SiteFactory,
    TerminalFactory,
    make_staff,
)

PRE_CAPTURE = {"initiated", "awaiting_customer_action", "authorised"}
PAID = {"captured", "partially_refunded", "refunded", "reconciled"}
STAGE = {"proposed": 0, "initiated": 1, "awaiting_customer_action": 2, "authorised": 3}

# What the spec allows: operation -> states it may start from -> resulting state.
ALLOWED = {
    "await": ({"initiated"}, "awaiting_customer_action"),
    "authorise": ({"initiated", "awaiting_customer_action"}, "authorised"),
    "capture": (PRE_CAPTURE, "captured"),
    "fail": (PRE_CAPTURE, "failed"),
    "void": (PRE_CAPTURE, "voided"),
    "reconcile": ({"captured", "partially_refunded", "refunded"}, "reconciled"),
}
# Repeating an outcome already reached is accepted and changes nothing.
IDEMPOTENT = {
    "await": {"awaiting_customer_action", "authorised"} | PAID,
    "authorise": {"authorised"} | PAID,
    "capture": PAID,
    "fail": {"failed"},
    "void": {"voided"},
    "reconcile": {"reconciled"},
}


class PaymentMachine(RuleBasedStateMachine):
    payments = Bundle("payments")

    def __init__(self):
        super().__init__()
        self.practice = PracticeFactory(refund_approval_threshold=None)
        self.site = SiteFactory(practice=self.practice)
        self.terminal = TerminalFactory(site=self.site, practice=self.practice)
        self.patient = PatientFactory(practice=self.practice)
        staff = make_staff(Role.REFUND_MANAGER, practice=self.practice)
        self.staff = Actor.staff(staff)
        self.provider = Actor.provider("dna")
        self.model: dict = {}  # payment id -> {"state", "captured", "refunded", "pending"}
        self.highest_stage: dict = {}

    @rule(
        target=payments,
        amount=st.decimals(min_value=Decimal("1.00"), max_value=Decimal("500.00"), places=2),
    )
    def create(self, amount):
        payment = services.payment_create(
            actor=self.staff,
            practice=self.practice,
            site=self.site,
            patient=self.patient,
            target_type="invoice",
            target_id="INV-SM",
            amount=amount,
            method="terminal",
            terminal=self.terminal,
        )
        self.model[payment.id] = {
            "state": "initiated",
            "amount": amount,
            "captured": Decimal(0),
            "refunded": Decimal(0),
            "pending": {},
        }
        return payment.id

    def _outcome(self, op, payment_id, call):
        expected = self.model[payment_id]
        sources, target = ALLOWED[op]
        try:
            call()
        except PaymentError:
            assert expected["state"] not in sources and expected["state"] not in IDEMPOTENT[op], (
                op,
                expected["state"],
            )
            return
        if expected["state"] in IDEMPOTENT[op]:
            return
        assert expected["state"] in sources, (op, expected["state"])
        expected["state"] = target
        if target == "captured":
            expected["captured"] = expected["amount"]

    @rule(payment_id=payments)
    def await_customer(self, payment_id):
        self._outcome(
            "await",
            payment_id,
            lambda: services.payment_await_customer(payment_id=payment_id, actor=self.provider),
        )

    @rule(payment_id=payments)
    def authorise(self, payment_id):
        self._outcome(
            "authorise",
            payment_id,
            lambda: services.payment_authorise(payment_id=payment_id, actor=self.provider),
        )

    @rule(payment_id=payments)
    def capture(self, payment_id):
        self._outcome(
            "capture",
            payment_id,
            lambda: services.payment_capture(payment_id=payment_id, actor=self.provider),
        )

    @rule(payment_id=payments)
    def fail(self, payment_id):
        self._outcome(
            "fail",
            payment_id,
            lambda: services.payment_fail(
                payment_id=payment_id,
                actor=self.provider,
                code="provider_timeout",
                reason="timeout",
            ),
        )

    @rule(payment_id=payments)
    def void(self, payment_id):
        self._outcome(
            "void",
            payment_id,
            lambda: services.payment_void(
                payment_id=payment_id, actor=self.staff, reason_code="other"
            ),
        )

    @rule(payment_id=payments)
    def reconcile(self, payment_id):
        if self.model[payment_id]["pending"] and self.model[payment_id]["state"] != "reconciled":
            with pytest.raises(PaymentError):
                services.payment_reconcile(
                    payment_id=payment_id, actor=self.provider, batch_reference="B"
                )
            return
        self._outcome(
            "reconcile",
            payment_id,
            lambda: services.payment_reconcile(
                payment_id=payment_id, actor=self.provider, batch_reference="B"
            ),
        )

    @rule(payment_id=payments, share=st.integers(min_value=1, max_value=100))
    def refund(self, payment_id, share):
        expected = self.model[payment_id]
        amount = max(Decimal("0.01"), (expected["amount"] * share / 100).quantize(Decimal("0.01")))
        reserved = expected["refunded"] + sum(expected["pending"].values(), Decimal(0))
        try:
            result = services.refund_request(
                payment_id=payment_id, actor=self.staff, amount=amount, reason_code="other"
            )
        except PaymentError:
            assert (
                expected["state"] not in ("captured", "partially_refunded", "reconciled")
                or reserved + amount > expected["captured"]
            )
            return
        assert expected["state"] in ("captured", "partially_refunded", "reconciled")
        assert reserved + amount <= expected["captured"]
        expected["pending"][result.refund.id] = amount

    @rule(payment_id=payments, confirm=st.booleans())
    def settle_refund(self, payment_id, confirm):
        expected = self.model[payment_id]
        if not expected["pending"]:
            return
        refund_id, amount = next(iter(expected["pending"].items()))
        if not confirm:
            services.refund_fail(refund_id=refund_id, actor=self.provider, reason="refused")
            del expected["pending"][refund_id]
            return
        services.refund_complete(refund_id=refund_id, actor=self.provider)
        del expected["pending"][refund_id]
        expected["refunded"] += amount
        expected["state"] = (
            "refunded" if expected["refunded"] == expected["captured"] else "partially_refunded"
        )

    @invariant()
    def database_matches_the_model(self):
        for payment in Payment.objects.filter(pk__in=list(self.model)):
            expected = self.model[payment.id]
            assert payment.state == expected["state"]
            assert payment.captured_amount == expected["captured"]
            assert payment.refunded_amount == expected["refunded"]
            assert payment.refunded_amount <= payment.captured_amount
            pending = Refund.objects.filter(payment=payment, status=Refund.Status.PENDING).count()
            assert pending == len(expected["pending"])

    @invariant()
    def history_never_goes_back_and_captures_once(self):
        for payment_id in self.model:
            states = list(
                AuditEvent.objects.filter(payment_id=payment_id, subject_type="payment")
                .order_by("seq")
                .values_list("to_state", flat=True)
            )
            assert states.count("captured") <= 1
            reached_authorised = False
            for state in states:
                if reached_authorised:
                    assert state not in ("proposed", "initiated", "awaiting_customer_action"), (
                        states
                    )
                reached_authorised = reached_authorised or state in {"authorised"} | PAID


@pytest.mark.django_db
def test_payment_lifecycle_state_machine():
    run_state_machine_as_test(
        PaymentMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
