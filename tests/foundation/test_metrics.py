"""/metrics: payment, refund, void and webhook counters after commit; backlogs from the database."""

from __future__ import annotations

import re

import pytest
from django.db import transaction

from integrations.models import Destination
from integrations.outbox import outbox_enqueue
from payments import services
from tests.payments.helpers import new_payment


def _value(body: str, name: str, **labels) -> float:
    for line in body.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def test_outcomes_are_counted_after_commit(
    client,
    practice,
    site,
    patient,
    terminal,
    reception_actor,
    manager_actor,
    provider_actor,
    django_capture_on_commit_callbacks,
):
    before = _scrape(client)
    site_label = str(site.id)
    with django_capture_on_commit_callbacks(execute=True):
        ok = new_payment(reception_actor, practice, site, patient, terminal=terminal)
        services.payment_capture(payment_id=ok.id, actor=provider_actor)
        bad = new_payment(reception_actor, practice, site, patient, terminal=terminal)
        services.payment_fail(
            payment_id=bad.id, actor=provider_actor, code="declined", reason="Declined"
        )
        voided = new_payment(reception_actor, practice, site, patient, terminal=terminal)
        services.payment_void(payment_id=voided.id, actor=manager_actor, reason_code="other")
        refund = services.refund_request(
            payment_id=ok.id, actor=manager_actor, amount="10.00", reason_code="other"
        ).refund
        services.refund_complete(refund_id=refund.id, actor=provider_actor)
    after = _scrape(client)
    for name, labels in [
        (
            "primoro_payment_outcomes_total",
            {"method": "terminal", "site": site_label, "outcome": "captured"},
        ),
        (
            "primoro_payment_outcomes_total",
            {"method": "terminal", "site": site_label, "outcome": "failed"},
        ),
        ("primoro_voids_total", {"method": "terminal", "site": site_label}),
        ("primoro_refunds_total", {"method": "terminal", "site": site_label, "kind": "partial"}),
    ]:
        assert _value(after, name, **labels) - _value(before, name, **labels) == 1, name


def test_rolled_back_change_is_not_counted(
    client,
    practice,
    site,
    patient,
    terminal,
    reception_actor,
    provider_actor,
    django_capture_on_commit_callbacks,
):
    payment = new_payment(reception_actor, practice, site, patient, terminal=terminal)
    before = _value(
        _scrape(client), "primoro_payment_outcomes_total", site=str(site.id), outcome="captured"
    )
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.payment_capture(payment_id=payment.id, actor=provider_actor)
        raise RuntimeError("rolled back")
    assert (
        _value(
            _scrape(client), "primoro_payment_outcomes_total", site=str(site.id), outcome="captured"
        )
        == before
    )


def test_outbox_backlog_and_age_come_from_the_database(client, practice):
    with transaction.atomic():
        outbox_enqueue(
            destination=Destination.TASK_MANAGER,
            event_type="task.create",
            practice_id=practice.id,
            payload={"task_type": "payment_failed"},
        )
    body = _scrape(client)
    assert _value(body, "primoro_outbox_backlog", destination="task_manager", status="pending") == 1
    assert re.search(
        r'primoro_outbox_oldest_pending_age_seconds\{destination="task_manager"\} [0-9.e+-]+', body
    )


def test_metrics_token_when_configured(client, db, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 401
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200
    )


def test_webhook_ingest_counts(client, db):
    from integrations.webhooks import webhook_event_store

    before = _value(
        _scrape(client), "primoro_webhook_events_total", provider="metrics-test", result="duplicate"
    )
    webhook_event_store(provider="metrics-test", event_id="e1", body={})
    webhook_event_store(provider="metrics-test", event_id="e1", body={})
    body = _scrape(client)
    assert (
        _value(body, "primoro_webhook_events_total", provider="metrics-test", result="duplicate")
        == before + 1
    )


def test_rejected_webhooks_are_counted(client, db):
    before = _value(
        _scrape(client), "primoro_webhook_events_total", provider="gocardless", result="rejected"
    )
    response = client.post(
        "/webhooks/gocardless/",
        data=b'{"events": []}',
        content_type="application/json",
        headers={"Webhook-Signature": "00"},
    )
    assert response.status_code == 498
    assert (
        _value(
            _scrape(client),
            "primoro_webhook_events_total",
            provider="gocardless",
            result="rejected",
        )
        == before + 1
    )
