"""Fault tests: break one part of the running system, then check that nothing is lost or doubled.

Each test names the invariant it checks in its docstring and is bounded in
time. External parts are real: the DNA simulator, a `MessageSink` for every
platform module and the PMS simulator over HTTP; Redis, Celery workers and
gunicorn are real processes started by the test (tests/faults/processes.py).

"Nothing lost, nothing doubled" is checked on what the consumers really
received (`assert_delivered`: every HTTP POST that reached them, not their
de-duplicated store alone) and on our own records (`assert_once`: one audit
event per transition, one outbox row per message).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import httpx
import pytest

from audit.models import AuditEvent
from integrations.destinations import ENV_PREFIX
from integrations.models import Destination, OutboxMessage
from integrations.receivers import MessageSink
from tests.integrations.conftest import (  # noqa: F401
    SECRETS,
    module_path,
    pms_sim,
    relay_settings,
    sink,
    system_actor,
)
from tests.providers.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    MERCHANT_ID,
    TERMINAL_API_KEY,
    TERMINAL_KEY_ID,
    TERMINAL_SECRET,
    dna,  # noqa: F401
    http,  # noqa: F401
    live,  # noqa: F401
    sim_terminal,  # noqa: F401
)
from tests.subscriptions.conftest import (
    TOKEN,
    gc_api,  # noqa: F401
    post_events,
    publish,
    scenario,
    sim_requests,
)


def endpoint_env(sink_url: str, pms_url: str) -> dict[str, str]:
    """MODULE_*_URL / _SECRET and PMS_WRITEBACK_* for an app process: every destination enabled."""
    env = {}
    for destination, prefix in ENV_PREFIX.items():
        if destination == Destination.PMS:
            env[f"{prefix}_URL"] = f"{pms_url}/writebacks"
        else:
            env[f"{prefix}_URL"] = f"{sink_url}{module_path(destination)}"
        env[f"{prefix}_SECRET"] = SECRETS[destination]
    return env


def dna_env(dna_url: str) -> dict[str, str]:
    """DNA_* for an app process: every DNA host is the test's simulator, with short timeouts."""
    return {
        "DNA_OAUTH_URL": dna_url,
        "DNA_API_URL": dna_url,
        "DNA_PAY_URL": dna_url,
        "DNA_AXEPT_URL": f"{dna_url}/axept",
        "DNA_CLIENT_ID": CLIENT_ID,
        "DNA_CLIENT_SECRET": CLIENT_SECRET,
        "DNA_TERMINAL_MERCHANT_ID": MERCHANT_ID,
        "DNA_TERMINAL_KEY_ID": "primoro-key-1",
        "DNA_TERMINAL_API_KEY": TERMINAL_API_KEY,
        "DNA_TERMINAL_WEBHOOK_SECRET": TERMINAL_SECRET,
        "DNA_TERMINAL_WEBHOOK_KEY_ID": TERMINAL_KEY_ID,
        "DNA_HTTP_CONNECT_TIMEOUT_SECONDS": "1",
        "DNA_HTTP_TIMEOUT_SECONDS": "1.5",
        "DNA_HTTP_RETRIES": "1",
    }


def gocardless_env(api_url: str) -> dict[str, str]:
    """GOCARDLESS_* for an app process: look-ups go to the test's API simulator."""
    return {"GOCARDLESS_API_URL": api_url, "GOCARDLESS_ACCESS_TOKEN": TOKEN}


def hanging_gocardless_webhook(client, api_url, practice, patient, *, seconds: float) -> str:
    """Post a confirmed Direct Debit payment we have never seen; GoCardless's API hangs on it.

    The worker processing it looks the payment up inside the event's transaction,
    holding the event's row lock, and waits `seconds` for an answer (then a 504).
    Only the first look-up hangs. Returns GoCardless's payment id.
    """
    built = scenario("payment_confirmed", practice, patient, subscription_id="CP-HANG")
    publish(api_url, built)
    payment_id = built.events[0]["links"]["payment"]
    fault = {"path_prefix": f"/payments/{payment_id}", "mode": "timeout", "seconds": seconds}
    assert httpx.post(f"{api_url}/sim/faults", json=fault, timeout=5).status_code == 201
    assert post_events(client, built.events).status_code == 200
    return payment_id


def gocardless_lookups(api_url: str, payment_id: str) -> int:
    """How many times GoCardless's API was asked about this payment."""
    return sum(1 for r in sim_requests(api_url) if r["path"] == f"/payments/{payment_id}")


@pytest.fixture
def fast_relay_env() -> dict[str, str]:
    """Relay settings for worker processes: short backoff and leases, frequent beat sweeps."""
    return {
        "OUTBOX_BACKOFF_BASE_SECONDS": "0.2",
        "OUTBOX_BACKOFF_CAP_SECONDS": "1",
        "OUTBOX_MAX_ATTEMPTS": "50",
        "OUTBOX_HTTP_TIMEOUT_SECONDS": "2",
        "OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS": "0.5",
        # A row claimed by a relay that could not record the outcome (its connection cut,
        # its process killed) is due again after this; it must exceed two calls' timeouts.
        "OUTBOX_LEASE_SECONDS": "6",
        "OUTBOX_SWEEP_SECONDS": "1",
        "WEBHOOK_SWEEP_SECONDS": "1",
    }


def assert_delivered(consumer: MessageSink, expected: Iterable, *, redelivered: int = 0) -> Counter:
    """Check the raw deliveries a consumer took in against the event ids it should have.

    (a) nothing lost: every expected event id was delivered at least once, and no other;
    (b) nothing sent twice beyond what the scenario allows: at most `redelivered`
        deliveries in all beyond the first of each event (0: exactly one each; a caller
        allowing more says why: at-least-once delivery after a lost outcome);
    (c) the consumer stored each event exactly once (its de-duplication held).
    Returns the raw count per event id.
    """
    expected = {str(event_id) for event_id in expected}
    raw = consumer.deliveries()
    assert set(raw) == expected, (
        f"lost: {sorted(expected - set(raw))}; unexpected: {sorted(set(raw) - expected)}"
    )
    repeats = {event_id: n for event_id, n in raw.items() if n > 1}
    assert sum(n - 1 for n in repeats.values()) <= redelivered, f"delivered again: {repeats}"
    first_seen = Counter(r.event_id for r in consumer.received if r.accepted and not r.duplicate)
    assert first_seen == dict.fromkeys(expected, 1)
    assert set(consumer.stored) == expected
    return raw


def assert_once(*, payment_ids: Iterable, to_state: str) -> None:
    """One audit event per payment for this transition, and one outbox row per message."""
    payment_ids = list(payment_ids)
    transitions = Counter(
        AuditEvent.objects.filter(payment_id__in=payment_ids, to_state=to_state).values_list(
            "payment_id", flat=True
        )
    )
    assert transitions == dict.fromkeys(payment_ids, 1), to_state
    # A message's cause: the payment, and which of its refunds or receipts it is about.
    messages = Counter(
        (
            row.payment_id,
            row.destination,
            row.event_type,
            row.payload.get("refund_id"),
            row.payload.get("receipt_kind"),
        )
        for row in OutboxMessage.objects.filter(payment_id__in=payment_ids)
    )
    assert messages and set(messages.values()) == {1}, messages


def module_rows() -> set[str]:
    """The ids of every outbox row for a platform module (the sink's share)."""
    return {
        str(pk)
        for pk in OutboxMessage.objects.exclude(destination=Destination.PMS).values_list(
            "pk", flat=True
        )
    }


def pms_rows() -> set[str]:
    """The ids of every PMS writeback row (the PMS simulator's share)."""
    return {
        str(pk)
        for pk in OutboxMessage.objects.filter(destination=Destination.PMS).values_list(
            "pk", flat=True
        )
    }
