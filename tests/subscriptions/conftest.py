"""GoCardless over real HTTP: the API simulator, signed webhooks, the outbox sinks.

Webhooks are built and signed with the simulator's own functions
(integrations.simulators.gocardless) and posted to our endpoint; look-ups go
to the API simulator on an ephemeral port; outbox rows are relayed to a local
`MessageSink` (every module) and the PMS simulator.
"""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from integrations.models import Destination, OutboxMessage, WebhookEvent
from integrations.pms.simulator import serve_in_thread as serve_pms
from integrations.receivers import MessageSink
from integrations.simulators import gocardless, signing
from integrations.simulators.base import isoformat

WEBHOOK_PATH = "/webhooks/gocardless/"
SECRET = "gc-webhook-secret-for-subscription-tests"
TOKEN = "gc-subscriptions-test-token"
MODULES = [d for d in Destination.values if d != Destination.PMS]
SINK_SECRETS = {d: f"test-sub-outbox-secret-{d}-0123456789" for d in Destination.values}


@pytest.fixture
def gc_api(settings):
    """The GoCardless API simulator, and our settings pointing at it."""
    url, stop = gocardless.serve_in_thread(0, access_token=TOKEN)
    settings.GOCARDLESS_API_URL = url
    settings.GOCARDLESS_ACCESS_TOKEN = TOKEN
    settings.GOCARDLESS_WEBHOOK_SECRET = SECRET
    settings.GOCARDLESS_HTTP_TIMEOUT_SECONDS = 2.0
    yield url
    stop()


@pytest.fixture
def sink():
    consumer = MessageSink(secret={f"/{d}": SINK_SECRETS[d] for d in MODULES}, name="modules")
    consumer.start()
    yield consumer
    consumer.stop()


@pytest.fixture
def pms_sim():
    simulator = serve_pms(port=0, secret=SINK_SECRETS[Destination.PMS])
    yield simulator
    simulator.stop()


@pytest.fixture
def relay_settings(settings, sink, pms_sim):
    endpoints = {d: {"url": f"{sink.url}/{d}", "secret": SINK_SECRETS[d]} for d in MODULES}
    endpoints[Destination.PMS] = {
        "url": f"{pms_sim.url}/writebacks",
        "secret": SINK_SECRETS[Destination.PMS],
    }
    settings.OUTBOX_ENDPOINTS = endpoints
    settings.OUTBOX_MAX_ATTEMPTS = 3
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 0.05
    settings.OUTBOX_BACKOFF_CAP_SECONDS = 0.2
    settings.OUTBOX_HTTP_TIMEOUT_SECONDS = 3.0
    settings.OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.OUTBOX_RELAY_ON_COMMIT = False
    return settings


# --- building GoCardless traffic ------------------------------------------------------------


def metadata_for(practice, patient, module="care_plan") -> dict[str, str]:
    """What Care Plan / Hygiene put on the mandate when they created it (docs/contracts.md)."""
    return {
        "primoro_practice_id": str(practice.id),
        "primoro_patient_id": str(patient.id),
        "subscription_module": module,
    }


def scenario(name, practice, patient, *, module="care_plan", subscription_id="CP-1001", **kw):
    return gocardless.build_scenario(
        name,
        mandate_metadata=metadata_for(practice, patient, module),
        payment_metadata={"subscription_id": subscription_id} if subscription_id else {},
        **kw,
    )


def gc_event(
    action: str,
    *,
    at: datetime,
    resource_type: str = "payments",
    links: dict[str, str],
    **details,
) -> dict:
    """One event in GoCardless's shape, for actions the simulator's scenarios do not send."""
    return {
        "id": gocardless.new_id("EV"),
        "created_at": isoformat(at),
        "action": action,
        "resource_type": resource_type,
        "links": links,
        "details": {
            "origin": "gocardless",
            "cause": details.pop("cause", f"payment_{action}"),
            "description": details.pop("description", f"The payment was {action}."),
            **details,
        },
        "metadata": {},
    }


def signed(events: list[dict], secret: str = SECRET) -> tuple[bytes, str]:
    body = gocardless.webhook_body(events)
    return body, signing.gocardless_signature(body, secret)


def post_events(client, events: list[dict], *, secret: str = SECRET):
    """POST a signed webhook through the Django test client."""
    body, signature = signed(events, secret)
    return client.post(
        WEBHOOK_PATH, data=body, content_type="application/json", HTTP_WEBHOOK_SIGNATURE=signature
    )


@pytest.fixture
def deliver(client, django_capture_on_commit_callbacks):
    """Post events and run what their commit queued (eager Celery: processing happens inline)."""

    def _deliver(events: list[dict], *, secret: str = SECRET):
        with django_capture_on_commit_callbacks(execute=True):
            response = post_events(client, events, secret=secret)
        return response

    return _deliver


def sim_requests(api_url: str) -> list[dict]:
    """What the GoCardless API simulator was asked (its request log)."""
    return httpx.get(f"{api_url}/sim/requests", timeout=5).json()["requests"]


def outbox(destination=None, event_type=None) -> list[OutboxMessage]:
    rows = OutboxMessage.objects.order_by("created_at")
    if destination:
        rows = rows.filter(destination=destination)
    if event_type:
        rows = rows.filter(event_type=event_type)
    return list(rows)


def gocardless_events(status=None) -> list[WebhookEvent]:
    rows = WebhookEvent.objects.filter(provider="gocardless").order_by("received_at")
    if status:
        rows = rows.filter(status=status)
    return list(rows)


def publish(api_url: str, built) -> None:
    """Make the API simulator answer for a scenario's payment, mandate and payout."""
    gocardless.publish_resources(api_url, built)
