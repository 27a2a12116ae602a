"""DNA times out, answers 500, drops connections, loses webhooks: the janitor settles every payment.

Invariant: every payment reaches a known state (captured or failed, never left
initiated, awaiting or authorised), the one DNA's own records imply; a look-up
that fails changes nothing and is asked again on the next pass; nothing is
captured twice and no sale is sent twice; every failure gives staff exactly one
task.

- In-process, one batch mixes every fault (tests/providers has one test per
  fault; here they happen together, on separate terminals, and the janitor
  runs over all of them at once).
- Through real processes, the timeout and 500 faults: a Celery worker sends
  the terminal sales and its embedded beat runs the janitor every two seconds,
  on the test database and a redis-server of our own, against the DNA
  simulator; the resulting messages reach the module sink and the PMS
  simulator exactly once.
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
from tests.faults.conftest import (
    assert_delivered,
    assert_once,
    dna_env,
    endpoint_env,
    module_rows,
    pms_rows,
)
from tests.faults.processes import (
    app_env,
    celery_worker,
    free_port,
    publishing_to,
    redis_server,
    wait_until,
)
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
    live.terminal("TIDF0005", "timeout", webhook=False)
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


@pytest.mark.worker
def test_timeouts_and_500s_settle_through_the_worker_and_the_janitor_once(
    dna, settings, sink, pms_sim, fast_relay_env, reception_actor, practice, site, patient
):
    settings.DNA_OPERATIONS_ON_COMMIT = True  # our commits ask the worker to send each sale
    settings.OUTBOX_RELAY_ON_COMMIT = True
    nobody = f"http://127.0.0.1:{free_port()}"  # DNA's webhooks to us are lost: only look-ups
    payments: dict[str, Payment] = {}

    def start(name: str) -> Payment:
        terminal = TerminalFactory(site=site, practice=practice, tid=f"TIDW{len(payments):04d}")
        payments[name] = flows.terminal_payment_start(
            actor=reception_actor,
            practice=practice,
            site=site,
            patient=patient,
            target_type=TargetType.INVOICE,
            target_id=f"INV-W-{name}",
            amount="42.00",
            terminal=terminal,
        )
        return payments[name]

    def faults_left() -> list:
        return dna.http.get(f"{dna.url}/sim/faults").json()["faults"]

    def sent(payment: Payment) -> bool:
        return any(
            r["method"] == "POST" and r["body"]["uti"] == str(payment.id)
            for r in dna.requests("/axept/transaction")
        )

    with redis_server() as redis:
        env = app_env(
            redis_url=redis.url,
            PUBLIC_BASE_URL=nobody,
            DNA_JANITOR_SECONDS="2",
            # Unanswered for 4 s before the janitor asks about a payment: time to approve it.
            DNA_JANITOR_STALE_SECONDS="4",
            DNA_OPERATION_LEASE_SECONDS="3",  # a sale whose outcome is unknown is asked after
            # A payment whose look-up failed is asked again within 2 s, not the default minutes.
            DNA_JANITOR_RECHECK_CAP_SECONDS="2",
            **dna_env(dna.url),
            **endpoint_env(sink.url, pms_sim.url),
            **fast_relay_env,
        )
        with celery_worker(env, concurrency=2, beat=True) as worker, publishing_to(redis.url):
            # The sale times out (DNA never got it), then answers 500: neither may be resent.
            dna.fault("/axept/transaction", "timeout", method="POST", seconds=3)
            start("sale_timed_out")
            assert wait_until(lambda: not faults_left(), timeout=30), worker.output()
            dna.fault("/axept/transaction", "500", method="POST")
            start("sale_500")
            assert wait_until(lambda: not faults_left(), timeout=30), worker.output()
            # Approved at the terminal, the webhook lost, and the janitor's look-ups time out
            # or fail (one call a pass, no retries: two passes each) before one succeeds.
            for name, mode in (("lookup_timed_out", "timeout"), ("lookup_500", "500")):
                payment = start(name)
                assert wait_until(lambda p=payment: sent(p), timeout=30), worker.output()
                dna.fault(
                    f"/axept/transaction/{payment.id}", mode, method="GET", count=2, seconds=2
                )
                dna.terminal(payment.terminal.tid, "approve")

            def settled() -> bool:
                return (
                    not Payment.objects.filter(state__in=STUCK).exists()
                    and not ProviderOperation.objects.filter(
                        status=ProviderOperation.Status.PENDING
                    ).exists()
                    and not OutboxMessage.objects.exclude(
                        status=OutboxMessage.Status.DELIVERED
                    ).exists()
                )

            done = wait_until(settled, timeout=60, interval=0.25)
            assert done, worker.output()
            assert faults_left() == []  # every armed fault was met

    final = {
        name: Payment.objects.values_list("state", "failure_code").get(pk=payment.pk)
        for name, payment in payments.items()
    }
    assert final == {
        "sale_timed_out": (S.FAILED, "provider_unavailable"),
        "sale_500": (S.FAILED, "provider_unavailable"),
        "lookup_timed_out": (S.CAPTURED, ""),
        "lookup_500": (S.CAPTURED, ""),
    }
    captured = [payments["lookup_timed_out"].id, payments["lookup_500"].id]
    failed = [payments["sale_timed_out"].id, payments["sale_500"].id]
    assert_once(payment_ids=captured, to_state=S.CAPTURED)
    assert_once(payment_ids=failed, to_state=S.FAILED)
    tasks = Counter(
        OutboxMessage.objects.filter(
            destination=Destination.TASK_MANAGER, event_type="task.create"
        ).values_list("payment_id", flat=True)
    )
    assert tasks == dict.fromkeys(failed, 1)
    # Each sale was sent exactly once, whatever came back; unknown outcomes were asked about.
    sales = Counter(
        r["body"]["uti"] for r in dna.requests("/axept/transaction") if r["method"] == "POST"
    )
    assert sales == {str(p.id): 1 for p in payments.values()}
    lookups = Counter(
        r["path"].rsplit("/", 1)[1]
        for r in dna.requests("/axept/transaction/")
        if r["method"] == "GET"
    )
    assert all(lookups[str(pk)] >= 3 for pk in captured), lookups  # two failed, one answered
    assert lookups[str(payments["sale_timed_out"].id)] >= 1
    # Every resulting message (writebacks, signals, staff tasks) delivered in one POST each.
    assert_delivered(pms_sim, pms_rows())
    assert len(pms_rows()) == len(captured)
    assert_delivered(sink, module_rows())
