"""Idempotency-Key: replays return the first response, a different body is refused, duplicates
in flight are held off, failures release the key, and keys expire after 24 hours."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from integrations.models import OutboxMessage
from payments.api.idempotency import idempotency_expire, request_fingerprint
from payments.api.models import IdempotencyKey
from payments.api.tasks import expire_idempotency_keys
from payments.api.tokens import staff_api_token_issue
from payments.models import Payment, PaymentLink
from practices.roles import Role
from tests.factories import make_staff

COLLECT = "/api/v1/staff/collections/"


def _body(patient, site, **extra) -> dict:
    return {
        "patient_id": str(patient.id),
        "site_id": str(site.id),
        "target_type": "invoice",
        "target_id": "INV-300",
        "amount": "60.00",
        "method": "pay_by_link",
        **extra,
    }


def _links() -> int:
    return PaymentLink.objects.count()


@pytest.mark.django_db
def test_a_repeat_with_the_same_key_and_body_returns_the_first_response_and_does_nothing(
    staff_api, reception, patient, site
):
    client = staff_api(reception)

    first = client.post(COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post(COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == 201 and second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert _links() == 1 and Payment.objects.count() == 1
    assert OutboxMessage.objects.filter(event_type="payment_link.deliver").count() == 1
    row = IdempotencyKey.objects.get()
    assert row.principal == f"staff:{reception.pk}" and row.status == "completed"
    assert row.response_status == 201


@pytest.mark.django_db
def test_key_order_in_the_body_does_not_matter(staff_api, reception, patient, site):
    client = staff_api(reception)
    body = _body(patient, site)

    client.post(COLLECT, body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    again = client.post(
        COLLECT, dict(reversed(list(body.items()))), format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )

    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert _links() == 1


@pytest.mark.django_db
def test_the_same_key_with_a_different_body_or_endpoint_is_refused(
    staff_api, reception, patient, site
):
    client = staff_api(reception)
    client.post(COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="k-3")

    changed = client.post(
        COLLECT, _body(patient, site, amount="61.00"), format="json", HTTP_IDEMPOTENCY_KEY="k-3"
    )
    elsewhere = client.post(
        f"/api/v1/staff/payments/{Payment.objects.get().id}/retry/", HTTP_IDEMPOTENCY_KEY="k-3"
    )

    for answer in (changed, elsewhere):
        assert answer.status_code == 422
        assert answer.json()["code"] == "idempotency_key_reused"
        assert answer.json()["field"] == "Idempotency-Key"
    assert _links() == 1


@pytest.mark.django_db
def test_a_refusal_is_replayed_too(staff_api, reception, patient, site):
    client = staff_api(reception)
    body = _body(patient, site, amount="0.00")

    first = client.post(COLLECT, body, format="json", HTTP_IDEMPOTENCY_KEY="k-4")
    second = client.post(COLLECT, body, format="json", HTTP_IDEMPOTENCY_KEY="k-4")

    assert first.status_code == second.status_code == 400
    assert (
        second.json()
        == first.json()
        == {
            "code": "invalid_amount",
            "message": "The amount must be more than zero.",
            "field": "amount",
        }
    )


@pytest.mark.django_db
def test_keys_belong_to_their_caller(staff_api, reception, practice, patient, site):
    colleague = make_staff(Role.RECEPTION, practice=practice)

    a = staff_api(reception).post(
        COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="shared"
    )
    b = staff_api(colleague).post(
        COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="shared"
    )

    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"] and "Idempotent-Replayed" not in b
    assert _links() == 2


@pytest.mark.django_db
def test_without_a_key_each_post_runs(staff_api, reception, patient, site):
    client = staff_api(reception)

    client.post(COLLECT, _body(patient, site), format="json")
    client.post(COLLECT, _body(patient, site), format="json")

    assert _links() == 2 and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "naïve-ключ"])
def test_unusable_keys_are_refused(staff_api, reception, patient, site, key):
    answer = staff_api(reception).post(
        COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY=key
    )

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_idempotency_key"
    assert _links() == 0


@pytest.mark.django_db
def test_keys_expire_after_24_hours(staff_api, reception, patient, site):
    client = staff_api(reception)
    client.post(COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="old")
    client.post(COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="recent")
    IdempotencyKey.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=24, minutes=1)
    )

    # An expired key met before the sweep counts as new: the request runs again.
    rerun = client.post(COLLECT, _body(patient, site), format="json", HTTP_IDEMPOTENCY_KEY="old")
    assert rerun.status_code == 201 and "Idempotent-Replayed" not in rerun
    assert _links() == 3
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))

    assert expire_idempotency_keys.delay().get() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]
    assert idempotency_expire() == 0


@pytest.mark.django_db
def test_a_claim_whose_request_died_is_taken_over_after_its_lease(
    staff_api, reception, patient, site
):
    body = _body(patient, site)
    client = staff_api(reception)
    IdempotencyKey.objects.create(
        principal=f"staff:{reception.pk}",
        key="crashed",
        method="POST",
        path=COLLECT,
        request_hash=request_fingerprint("POST", COLLECT, body),
        locked_at=timezone.now() - timedelta(minutes=5),
    )

    answer = client.post(COLLECT, body, format="json", HTTP_IDEMPOTENCY_KEY="crashed")

    assert answer.status_code == 201 and _links() == 1
    assert IdempotencyKey.objects.get(key="crashed").status == "completed"


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_run_once(live_server, reception, patient, site):
    token = staff_api_token_issue(user=reception).token
    body = _body(patient, site)
    barrier = threading.Barrier(6)
    answers: list[httpx.Response] = []

    def send():
        with httpx.Client(timeout=15) as client:
            barrier.wait()
            answers.append(
                client.post(
                    f"{live_server.url}{COLLECT}",
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "race"},
                )
            )

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 6
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409} and statuses.count(201) >= 1
    created = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(created) == 1  # every 201 is the same payment (the first, or its replay)
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["code"] == "idempotency_request_in_progress"
    assert _links() == 1 and Payment.objects.count() == 1
    # Once it has finished, a retry gets the stored answer.
    with httpx.Client(timeout=15) as client:
        later = client.post(
            f"{live_server.url}{COLLECT}",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "race"},
        )
    assert later.status_code == 201 and later.headers["Idempotent-Replayed"] == "true"
    assert later.json()["id"] in created


@pytest.mark.django_db
def test_a_duplicate_while_the_first_is_still_running_gets_409(staff_api, reception, patient, site):
    body = _body(patient, site)
    IdempotencyKey.objects.create(
        principal=f"staff:{reception.pk}",
        key="running",
        method="POST",
        path=COLLECT,
        request_hash=request_fingerprint("POST", COLLECT, body),
    )

    answer = staff_api(reception).post(COLLECT, body, format="json", HTTP_IDEMPOTENCY_KEY="running")

    assert answer.status_code == 409
    assert answer.json()["code"] == "idempotency_request_in_progress"
    assert _links() == 0
