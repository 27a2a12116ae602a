"""Fixtures for the inbound contracts, deposits, overdue balances and the AI Guardian.

Inbound events are POSTed with the Django test client, signed as a module
would sign them (`integrations.signing.sign`); test_inbound_live.py sends every
contract's documented example over real HTTP to the live server as well. Outbound effects are read
from the outbox; one round trip runs the relay against a local receiver.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from audit.actors import Actor
from integrations.inbound.models import Module
from integrations.receivers import MessageSink
from integrations.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from practices.roles import Role
from tests.factories import PatientFactory, PracticeFactory, SiteFactory, make_staff
from tests.integrations.conftest import SECRETS as OUTBOX_SECRETS
from tests.integrations.conftest import endpoint_settings, module_path

INBOUND_SECRETS = {module: f"inbound-test-secret-{module}-9f8e7d6c5b4a" for module in Module.values}
GUARDIAN_TOKEN = "guardian-test-token-4c1f9a2b7e6d5c3a9b8e7f60"


@pytest.fixture(autouse=True)
def contract_settings(settings):
    settings.INBOUND_SECRETS = dict(INBOUND_SECRETS)
    settings.GUARDIAN_API_TOKEN = GUARDIAN_TOKEN
    settings.GUARDIAN_PRACTICE_IDS = []
    settings.GUARDIAN_SETTLE_SECONDS = 0
    settings.OUTBOX_RELAY_ON_COMMIT = False
    return settings


def inbound_path(module: str, event_type: str) -> str:
    return f"/api/v1/inbound/{module}/{event_type}/"


def post_event(
    client,
    module: str,
    event_type: str,
    body,
    *,
    event_id: str | None = None,
    secret: str | None = None,
    timestamp: int | None = None,
    raw: bytes | None = None,
    signature: str | None = None,
):
    """POST one inbound event, signed with the module's secret unless told otherwise."""
    raw = raw if raw is not None else json.dumps(body).encode()
    event_id = event_id or f"evt-{uuid.uuid4()}"
    headers = {EVENT_ID_HEADER: event_id}
    if signature is None:
        ts = int(time.time()) if timestamp is None else timestamp
        signature = sign(secret or INBOUND_SECRETS[module], ts, raw, event_id=event_id)
    if signature:
        headers[SIGNATURE_HEADER] = signature
    return client.post(
        inbound_path(module, event_type), data=raw, content_type="application/json", headers=headers
    )


@pytest.fixture
def finance_admin(practice):
    return make_staff(Role.FINANCE_ADMIN, practice=practice)


@pytest.fixture
def finance_actor(finance_admin):
    return Actor.staff(finance_admin)


@pytest.fixture
def reception_staff(practice):
    return make_staff(Role.RECEPTION, practice=practice)


@pytest.fixture
def other_practice(db):
    practice = PracticeFactory()
    SiteFactory(practice=practice, name="Elsewhere")
    PatientFactory(practice=practice)
    return practice


@pytest.fixture
def sink():
    consumer = MessageSink(
        secret={module_path(d): OUTBOX_SECRETS[d] for d in OUTBOX_SECRETS}, name="modules"
    )
    consumer.start()
    yield consumer
    consumer.stop()


@pytest.fixture
def relay_to_sink(settings, sink):
    settings.OUTBOX_ENDPOINTS = endpoint_settings(sink.url, None)
    settings.OUTBOX_HTTP_TIMEOUT_SECONDS = 3.0
    settings.OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS = 1.0
    return sink
