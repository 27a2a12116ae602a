"""Outbound HTTP clients share one TLS context per process (primoro_payments.http).

Building an SSLContext loads the CA bundle (10-15 ms of CPU); the relay opens a
client per batch and the provider clients one per unit of work, so none of
them may build its own.
"""

from __future__ import annotations

import ssl

import pytest

from integrations.dna.client import DnaClient
from integrations.relay import Transport
from primoro_payments.http import tls_context
from subscriptions.client import GoCardlessClient


@pytest.fixture
def contexts_built(monkeypatch):
    """Count SSL contexts made from here on (the standard library's factory, not ours)."""
    built = []
    make = ssl.create_default_context

    def counting(*args, **kwargs):
        built.append(args or kwargs)
        return make(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return built


def test_opening_outbound_clients_builds_no_tls_context(settings, contexts_built):
    shared = tls_context()
    contexts_built.clear()

    for _ in range(3):
        Transport.open().close()
        DnaClient().close()
        GoCardlessClient(base_url="https://api.example", access_token="token").close()

    assert contexts_built == []
    assert tls_context() is shared
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
