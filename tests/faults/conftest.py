"""Fault tests: break one part of the running system, then check that nothing is lost or doubled.

Each test names the invariant it checks in its docstring and is bounded in
time. External parts are real: the DNA simulator, a `MessageSink` for every
platform module and the PMS simulator over HTTP; Redis, Celery workers and
gunicorn are real processes started by the test (tests/faults/processes.py).
"""

from __future__ import annotations

import pytest

from integrations.destinations import ENV_PREFIX
from integrations.models import Destination
from tests.integrations.conftest import (  # noqa: F401
    SECRETS,
    module_path,
    pms_sim,
    relay_settings,
    sink,
    system_actor,
)
from tests.providers.conftest import dna, http, live, sim_terminal  # noqa: F401
from tests.subscriptions.conftest import gc_api  # noqa: F401


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
