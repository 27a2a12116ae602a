"""DNA times out, answers 500, drops connections, loses webhooks: the janitor settles every payment.

Invariant: every payment reaches a known state (captured or failed, never left
initiated, awaiting or authorised), the one DNA's own records imply; a look-up
that fails changes nothing and is asked again on the next pass; nothing is
captured twice and no sale is sent twice; every failure gives staff exactly one
task. One batch mixes every fault (tests/providers has one test per fault;
here they happen together, on separate terminals, and the janitor runs over
all of them at once).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from integrations.dna import janitor
from integrations.models import Destination, OutboxMessage
from payments import flows
from payments.models import Payment, PaymentState, ProviderOperation, TargetType
from tests.factories import TerminalFactory
from tests.faults.processes import free_port
from tests.providers.conftest import pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState
STUCK = {S.INITIATED, S.AWAITING_CUSTOMER_ACTION, S.AUTHORISED}
LOOKUP_FAILS = 1  # the janitor's read is tried once per pass (no retries inside a pass)


def test_a_batch_hit_by_every_provider_fault_ends_in_known_states(
    live, http, settings, reception_actor, practice, site, patient
):
    settings.DNA_CHECKOUT_ABANDON_SECONDS = 0
    reachable = settings.PUBLIC_BASE_URL
    unreachable = f"http://127.0.0.1:{free_port()}"  # nobody listens: DNA's webhooks are lost
    payments: dict[str, Payment] = {}

    def on_terminal(name: str, *, webhooks_reach_us: bool = True) -> Payment:
        terminal = TerminalFactory(site=site, practice=practice, tid=f"TIDF{len(payments):04d}")
        settings.PUBLIC_BASE_URL = reachable if webhooks_reach_us else unreachable
        payment = flows.terminal_payment_start(
            actor=reception_actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.INVOICE,
            target_id=f"INV-{name}",
            amount="42.00",
            terminal=terminal,
        )
        settings.PUBLIC_BASE_URL = reachable
        payments[name] = payment
        return payment

    def online(name: str, *, pay: bool) -> Payment:
        settings.PUBLIC_BASE_URL = unreachable  # the callback is lost
        session = flows.online_checkout_start(
            actor=reception_actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.INVOICE,
            target_id=f"INV-{name}",
            amount="30.00",
            return_url="https://app.example/return",
        )
        settings.PUBLIC_BASE_URL = reachable
        if pay:
            pay_on_hosted_page(http, session.redirect_url)
        payments[name] = session.payment
        return session.payment

    on_terminal("approved")
    live.terminal("TIDF0000", "approve")
    on_terminal("declined")
    live.terminal("TIDF0001", "decline")
    live.fault("/axept/transaction", "500", method="POST")
    on_terminal("sale_500")
    live.fault("/axept/transaction", "drop", method="POST")
    on_terminal("sale_dropped")
    live.fault("/axept/transaction", "timeout", method="POST", seconds=3)
    on_terminal("sale_timed_out")
    on_terminal("patient_walked_away")
    live.terminal("TIDF0005", "timeout")
    on_terminal("approval_webhook_lost", webhooks_reach_us=False)
    live.terminal("TIDF0006", "approve")
    slow = on_terminal("lookup_500", webhooks_reach_us=False)
    live.terminal("TIDF0007", "approve")
    live.fault(f"/axept/transaction/{slow.id}", "500", method="GET", count=LOOKUP_FAILS)
    slower = on_terminal("lookup_timed_out", webhooks_reach_us=False)
    live.terminal("TIDF0008", "approve")
    live.fault(
        f"/axept/transaction/{slower.id}", "timeout", method="GET", count=LOOKUP_FAILS, seconds=2
    )
    online("checkout_callback_lost", pay=True)
    online("checkout_abandoned", pay=False)
    unseen = online("checkout_lookup_500", pay=True)
    live.fault(f"/v2/transactions/{unseen.id}", "500", method="GET", count=LOOKUP_FAILS)

    janitor.run()

    waiting = {n for n, p in payments.items() if Payment.objects.get(pk=p.pk).state in STUCK}
    assert waiting == {"lookup_500", "lookup_timed_out", "checkout_lookup_500"}

    janitor.run(now=timezone.now() + timedelta(hours=1))  # when every payment is due again

    final = {
        name: Payment.objects.values_list("state", "failure_code").get(pk=payment.pk)
        for name, payment in payments.items()
    }
    assert final == {
        "approved": (S.CAPTURED, ""),
        "declined": (S.FAILED, "declined"),
        "sale_500": (S.FAILED, "provider_unavailable"),
        "sale_dropped": (S.FAILED, "provider_unavailable"),
        "sale_timed_out": (S.FAILED, "provider_unavailable"),
        "patient_walked_away": (S.FAILED, "provider_timeout"),
        "approval_webhook_lost": (S.CAPTURED, ""),
        "lookup_500": (S.CAPTURED, ""),
        "lookup_timed_out": (S.CAPTURED, ""),
        "checkout_callback_lost": (S.CAPTURED, ""),
        "checkout_abandoned": (S.FAILED, "checkout_abandoned"),
        "checkout_lookup_500": (S.CAPTURED, ""),
    }
    ids = [p.id for p in payments.values()]
    captured = [p.id for n, p in payments.items() if final[n][0] == S.CAPTURED]
    failed = [p.id for n, p in payments.items() if final[n][0] == S.FAILED]
    # Captured once, written back once; every failure tasked once; nothing left pending.
    assert Counter(
        AuditEvent.objects.filter(payment_id__in=ids, to_state=S.CAPTURED).values_list(
            "payment_id", flat=True
        )
    ) == dict.fromkeys(captured, 1)
    assert Counter(
        OutboxMessage.objects.filter(
            payment_id__in=ids, destination=Destination.PMS, event_type="payment.captured"
        ).values_list("payment_id", flat=True)
    ) == dict.fromkeys(captured, 1)
    assert Counter(
        OutboxMessage.objects.filter(
            payment_id__in=ids, destination=Destination.TASK_MANAGER, event_type="task.create"
        ).values_list("payment_id", flat=True)
    ) == dict.fromkeys(failed, 1)
    assert not ProviderOperation.objects.filter(status=ProviderOperation.Status.PENDING).exists()
    # A sale whose outcome was unknown was asked about, never sent again.
    sales = Counter(
        r["body"]["uti"] for r in live.requests("/axept/transaction") if r["method"] == "POST"
    )
    assert set(sales.values()) == {1}
