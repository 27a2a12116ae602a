"""Fixtures for the outbox relay: a local consumer, the PMS simulator, configured endpoints.

External parts are reached over real HTTP: `MessageSink` stands in for every
platform module (one path per module, each with its own secret) and the PMS
simulator for the PMS. Payments are made through the real service layer.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from audit.actors import Actor
from integrations.models import Destination
from integrations.outbox import outbox_enqueue
from integrations.pms.simulator import serve_in_thread
from integrations.receivers import MessageSink
from payments import services
from payments.models import PaymentMethod, TargetType

MODULES = [d for d in Destination.values if d != Destination.PMS]
SECRETS = {d: f"test-outbox-secret-{d}-0123456789" for d in Destination.values}


def module_path(destination: str) -> str:
    return f"/{destination}"


@pytest.fixture
def sink():
    consumer = MessageSink(secret={module_path(d): SECRETS[d] for d in MODULES}, name="modules")
    consumer.start()
    yield consumer
    consumer.stop()


@pytest.fixture
def pms_sim():
    simulator = serve_in_thread(port=0, secret=SECRETS[Destination.PMS])
    yield simulator
    simulator.stop()


def endpoint_settings(sink_url: str, pms_url: str | None) -> dict:
    endpoints = {d: {"url": f"{sink_url}{module_path(d)}", "secret": SECRETS[d]} for d in MODULES}
    endpoints[Destination.PMS] = {
        "url": f"{pms_url}/writebacks" if pms_url else "",
        "secret": SECRETS[Destination.PMS] if pms_url else "",
    }
    return endpoints


@pytest.fixture
def relay_settings(settings, sink, pms_sim):
    """Every destination configured, and a fast retry schedule so tests can watch it run."""
    settings.OUTBOX_ENDPOINTS = endpoint_settings(sink.url, pms_sim.url)
    settings.OUTBOX_MAX_ATTEMPTS = 3
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 0.05
    settings.OUTBOX_BACKOFF_CAP_SECONDS = 0.2
    settings.OUTBOX_HTTP_TIMEOUT_SECONDS = 3.0
    settings.OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.OUTBOX_RELAY_ON_COMMIT = False
    return settings


@pytest.fixture
def system_actor():
    return Actor.system("appointment_manager")


def create_payment(actor, practice, site, patient, *, amount="80.00", method=None, **extra):
    return services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=extra.pop("target_type", TargetType.INVOICE),
        target_id=extra.pop("target_id", "INV-2001"),
        amount=amount,
        method=method or PaymentMethod.ONLINE,
        **extra,
    )


def capture_payment(actor, provider, practice, site, patient, *, amount="80.00", **extra):
    """An online payment taken through the real lifecycle: created, presented, captured."""
    payment = create_payment(actor, practice, site, patient, amount=amount, **extra)
    services.payment_await_customer(
        payment_id=payment.id, actor=provider, provider_reference=f"dna-{payment.id.hex[:10]}"
    )
    return services.payment_capture(payment_id=payment.id, actor=provider).payment


def enqueue(destination, event_type, practice, payload, **extra):
    """An outbox row through the real write path, for destinations no service feeds yet."""
    with transaction.atomic():
        return outbox_enqueue(
            destination=destination,
            event_type=event_type,
            practice_id=practice.id,
            payload=payload,
            **extra,
        )
