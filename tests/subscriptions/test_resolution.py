"""Unknown payments and mandates: resolved through the read-only API, or kept as unmatched."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from integrations.models import WebhookEvent
from integrations.webhooks import webhook_event_process
from subscriptions.admin import UnmatchedGoCardlessEventAdmin
from subscriptions.models import SubscriptionMandate, SubscriptionPayment, UnmatchedGoCardlessEvent
from tests.factories import PatientFactory, PracticeFactory, SiteFactory
from tests.subscriptions.conftest import (
    gc_event,
    gocardless_events,
    metadata_for,
    outbox,
    publish,
    scenario,
    sim_requests,
)

pytestmark = pytest.mark.django_db

Status = WebhookEvent.Status


def _paths(api_url) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in sim_requests(api_url) if r["path"][:5] != "/sim/"]


def test_an_unknown_payment_is_resolved_through_the_api(deliver, gc_api, practice, patient):
    built = scenario(
        "payment_confirmed", practice, patient, mandate_ref="PMREF-RESOLVE", amount=2599
    )
    publish(gc_api, built)
    payment_id = built.events[0]["links"]["payment"]
    mandate_id = built.resources["mandates"][0]["id"]

    deliver(built.events)

    payment = SubscriptionPayment.objects.get()
    assert payment.gocardless_payment_id == payment_id
    assert payment.mandate_reference == "PMREF-RESOLVE"
    assert (payment.amount, payment.currency) == (Decimal("25.99"), "GBP")
    assert payment.subscription_id == "CP-1001"
    assert (
        payment.gocardless_subscription_id
        == built.resources["payments"][0]["links"]["subscription"]
    )
    assert payment.mandate.gocardless_mandate_id == mandate_id
    assert payment.mandate.state == "active_mandate"
    assert _paths(gc_api) == [
        ("GET", f"/payments/{payment_id}"),
        ("GET", f"/mandates/{mandate_id}"),
    ]


def test_a_second_payment_on_a_known_mandate_reads_only_the_payment(
    deliver, gc_api, practice, patient
):
    first = scenario("payment_confirmed", practice, patient)
    publish(gc_api, first)
    deliver(first.events)
    mandate_id = first.resources["mandates"][0]["id"]
    second = scenario("payment_failed", practice, patient, mandate_id=mandate_id)
    publish(gc_api, second)
    before = len(_paths(gc_api))

    deliver(second.events)

    assert _paths(gc_api)[before:] == [("GET", f"/payments/{second.events[0]['links']['payment']}")]
    assert SubscriptionMandate.objects.count() == 1
    assert sorted(SubscriptionPayment.objects.values_list("state", flat=True)) == ["failed", "paid"]


def test_without_a_subscription_id_in_metadata_the_gocardless_subscription_is_the_target(
    deliver, gc_api, practice, patient
):
    built = scenario("payment_confirmed", practice, patient, subscription_id=None)
    publish(gc_api, built)

    deliver(built.events)

    payment = SubscriptionPayment.objects.get()
    assert payment.subscription_id == built.resources["payments"][0]["links"]["subscription"]
    assert payment.subscription_id.startswith("SB")


def test_the_optional_site_must_be_a_site_of_the_practice(deliver, gc_api, practice, patient, site):
    foreign_site = SiteFactory()
    built = scenario("payment_confirmed", practice, patient)
    built.resources["payments"][0]["metadata"]["primoro_site_id"] = str(site.id)
    publish(gc_api, built)
    other = scenario("payment_confirmed", practice, patient)
    other.resources["payments"][0]["metadata"]["primoro_site_id"] = str(foreign_site.id)
    publish(gc_api, other)

    deliver(built.events + other.events)

    sites = dict(SubscriptionPayment.objects.values_list("gocardless_payment_id", "site_id"))
    assert sites == {
        built.events[0]["links"]["payment"]: site.id,
        other.events[0]["links"]["payment"]: None,
    }


def _unmatched_note() -> str:
    [event] = gocardless_events()
    assert event.status == Status.UNMATCHED
    assert SubscriptionPayment.objects.count() == 0
    assert outbox() == []
    return event.last_error


def test_a_payment_gocardless_does_not_know_is_unmatched(deliver, gc_api):
    deliver([gc_event("confirmed", links={"payment": "PM000000GHOST"}, at=timezone.now())])

    assert "no payment PM000000GHOST" in _unmatched_note()


def test_a_mandate_without_our_metadata_is_unmatched(deliver, gc_api, practice, patient):
    built = scenario("payment_failed", practice, patient)
    built.resources["mandates"][0]["metadata"] = {}
    publish(gc_api, built)

    deliver(built.events)

    note = _unmatched_note()
    assert "primoro_practice_id" in note and "subscription_module" in note
    assert SubscriptionMandate.objects.count() == 0


def test_a_patient_of_another_practice_is_unmatched(deliver, gc_api, practice):
    stranger = PatientFactory(practice=PracticeFactory())
    built = scenario("payment_failed", practice, stranger)
    publish(gc_api, built)

    deliver(built.events)

    assert "not a patient of that practice" in _unmatched_note()


def test_an_unknown_module_is_unmatched(deliver, gc_api, practice, patient):
    built = scenario("payment_confirmed", practice, patient, module="orthodontics")
    publish(gc_api, built)

    deliver(built.events)

    assert "orthodontics" in _unmatched_note()


def test_unmatched_events_are_listed_for_platform_support(
    deliver, gc_api, rf, admin_user, reception
):
    deliver([gc_event("failed", links={"payment": "PM000000GHOST"}, at=timezone.now())])
    admin = UnmatchedGoCardlessEventAdmin(UnmatchedGoCardlessEvent, None)
    request = rf.get("/")

    request.user = admin_user
    listed = list(admin.get_queryset(request))
    request.user = reception

    assert [e.resource_ref for e in listed] == ["PM000000GHOST"]
    assert admin.has_module_permission(request) is False


def test_an_api_outage_leaves_the_event_for_a_retry(deliver, gc_api, practice, patient):
    built = scenario("payment_failed", practice, patient)
    publish(gc_api, built)
    httpx.post(f"{gc_api}/sim/faults", json={"path_prefix": "/payments/", "mode": "503"}, timeout=5)

    deliver(built.events)

    [event] = gocardless_events()
    assert event.status == Status.FAILED
    assert "503" in event.last_error
    assert SubscriptionPayment.objects.count() == 0
    assert outbox() == []

    assert webhook_event_process(event.pk) == Status.PROCESSED
    assert SubscriptionPayment.objects.get().state == "failed"
    assert len(outbox()) == 3


def test_an_unknown_mandate_event_registers_the_mandate(deliver, gc_api, practice, patient):
    built = scenario("mandate_cancelled", practice, patient, module="hygiene", mandate_ref="MREF-9")
    publish(gc_api, built)

    deliver(built.events)

    mandate = SubscriptionMandate.objects.get()
    assert (mandate.module, mandate.state, mandate.mandate_reference) == (
        "hygiene",
        "cancelled",
        "MREF-9",
    )
    assert metadata_for(practice, patient, "hygiene")["primoro_patient_id"] == str(
        mandate.patient_id
    )
