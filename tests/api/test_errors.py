"""Errors are JSON {"code","message","field"?}; validation names the field; rate limits bite."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from payments.models import Payment
from tests.api.conftest import link_balance, online_balance, random_ip

pytestmark = pytest.mark.django_db

COLLECT = "/api/v1/staff/collections/"


def _body(patient, site, **extra) -> dict:
    body = {
        "patient_id": str(patient.id),
        "site_id": str(site.id),
        "target_type": "invoice",
        "target_id": "INV-700",
        "amount": "10.00",
        "method": "pay_by_link",
        **extra,
    }
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"amount": None},
            {"code": "missing_field", "message": "This field is required.", "field": "amount"},
        ),
        (
            {"amount": 10.5},
            {
                "code": "invalid_field",
                "message": 'Send the amount as a decimal string with at most two decimal places, e.g. "80.00".',
                "field": "amount",
            },
        ),
        (
            {"amount": "10.505"},
            {
                "code": "invalid_field",
                "message": 'Send the amount as a decimal string with at most two decimal places, e.g. "80.00".',
                "field": "amount",
            },
        ),
        (
            {"target_type": "holiday"},
            {
                "code": "invalid_field",
                "message": '"holiday" is not a valid choice.',
                "field": "target_type",
            },
        ),
        (
            {"patient_id": "12"},
            {"code": "invalid_field", "message": "Must be a valid UUID.", "field": "patient_id"},
        ),
        (
            {"target_id": "x" * 65},
            {
                "code": "invalid_field",
                "message": "Ensure this field has no more than 64 characters.",
                "field": "target_id",
            },
        ),
    ],
)
def test_validation_errors_name_the_field(staff_api, reception, patient, site, change, expected):
    answer = staff_api(reception).post(COLLECT, _body(patient, site, **change), format="json")

    assert answer.status_code == 400
    assert answer.json() == expected
    assert not Payment.objects.exists()


def test_domain_refusals_keep_their_code_and_field(staff_api, reception, patient, site):
    answer = staff_api(reception).post(COLLECT, _body(patient, site, amount="0.00"), format="json")

    assert answer.status_code == 400
    assert answer.json() == {
        "code": "invalid_amount",
        "message": "The amount must be more than zero.",
        "field": "amount",
    }


def test_request_level_errors_are_json(staff_api, reception, patient_api, patient):
    client = staff_api(reception)

    malformed = client.post(COLLECT, "{not json", content_type="application/json")
    form = client.post(COLLECT, {"amount": "1"})  # multipart: not accepted
    wrong_method = client.delete(COLLECT)
    not_a_list = client.post(COLLECT, ["a"], format="json")
    patient_put = patient_api(patient).put("/api/v1/patient/balances/")

    assert malformed.status_code == 400 and malformed.json()["code"] == "malformed_request"
    assert form.status_code == 415 and form.json()["code"] == "unsupported_media_type"
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {
        "code": "method_not_allowed",
        "message": 'Method "DELETE" not allowed.',
    }
    assert not_a_list.status_code == 400 and not_a_list.json()["code"] == "invalid_request"
    assert patient_put.status_code == 405


def test_a_card_number_is_refused_before_the_api_sees_it(staff_api, reception, patient, site):
    answer = staff_api(reception).post(
        COLLECT, _body(patient, site, target_id="4111111111111111"), format="json"
    )

    assert answer.status_code == 400
    assert answer.json()["code"] == "card_number_refused"
    assert "4111" not in answer.content.decode()
    assert not Payment.objects.exists()


def test_pay_now_is_rate_limited_per_patient(
    dna, settings, patient_api, reception_actor, practice, site, patient
):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "patient_pay": "2/min"}
    balance = link_balance(reception_actor, practice, site, patient).link.payment
    other_device = patient_api(patient)  # another IP, same patient
    client = patient_api(patient)
    answers = [client.post(f"/api/v1/patient/balances/{balance.id}/pay/") for _ in range(2)]
    limited = other_device.post(f"/api/v1/patient/balances/{balance.id}/pay/")

    assert [a.status_code for a in answers] == [200, 200]
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert int(limited["Retry-After"]) > 0
    assert client.get("/api/v1/patient/balances/").status_code == 200  # reads still fine


def test_link_and_pay_endpoints_are_rate_limited_per_ip(
    settings, reception_actor, practice, site, patient
):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "link": "3/min"}
    issued = link_balance(reception_actor, practice, site, patient)
    prober = APIClient(REMOTE_ADDR=random_ip())
    neighbour = APIClient(REMOTE_ADDR=random_ip())

    answers = [prober.get(f"/api/v1/links/guess-{n}/") for n in range(3)]
    blocked = prober.get(f"/api/v1/links/{issued.token}/")
    spoofed = prober.get(f"/api/v1/links/{issued.token}/", HTTP_X_FORWARDED_FOR="198.51.100.7")

    assert [a.status_code for a in answers] == [404, 404, 404]
    assert blocked.status_code == 429 and spoofed.status_code == 429
    assert neighbour.get(f"/api/v1/links/{issued.token}/").status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_counts(
    settings, reception_actor, practice, site, patient
):
    settings.API_NUM_PROXIES = 1
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "pay_ip": "1/min"}
    online_balance(reception_actor, practice, site, patient)
    proxy = APIClient(REMOTE_ADDR="10.0.0.1")
    client, neighbour = random_ip(), random_ip()
    url = "/api/v1/links/any-token/checkout/"

    first = proxy.post(url, HTTP_X_FORWARDED_FOR=f"198.51.100.7, {client}")  # a spoof, then ours
    second = proxy.post(url, HTTP_X_FORWARDED_FOR=client)
    other = proxy.post(url, HTTP_X_FORWARDED_FOR=neighbour)

    assert [first.status_code, second.status_code, other.status_code] == [404, 429, 404]


def test_staff_without_payment_access_are_refused(staff_api, practice, patient, site):
    from django.contrib.auth.models import Group

    from tests.factories import make_staff

    nobody = make_staff(practice=practice)  # a profile, but no role
    assert not Group.objects.filter(user=nobody).exists()

    answer = staff_api(nobody).get("/api/v1/staff/terminals/")

    assert answer.status_code == 403
    assert answer.json() == {
        "code": "permission_denied",
        "message": "Your account has no access to payments.",
    }


def test_an_unreachable_rate_limit_store_lets_requests_through(
    settings, patient_api, reception_actor, practice, site, patient, log_output
):
    link_balance(reception_actor, practice, site, patient)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }

    answer = patient_api(patient).get("/api/v1/patient/balances/")

    assert answer.status_code == 200 and len(answer.json()["balances"]) == 1
    assert "api_throttle_unavailable" in log_output.getvalue()


def test_unrouted_api_paths_and_refused_methods_are_json(client):
    unrouted = client.get("/api/v1/no-such-thing/")
    outside = client.get("/no-such-page/")
    guardian = client.post("/api/v1/guardian/signals/")  # GET only
    schema = client.post("/api/schema/")

    assert unrouted.status_code == 404
    assert unrouted.json() == {"code": "not_found", "message": "Not found."}
    assert outside.status_code == 404 and outside["Content-Type"].startswith("text/html")
    for refused in (guardian, schema):
        assert refused.status_code == 405
        body = refused.json()
        assert set(body) == {"code", "message"} and body["code"] == "method_not_allowed"
        assert "not allowed" in body["message"]
    assert "POST" not in guardian["Allow"] and "GET" in guardian["Allow"]


def test_an_unexpected_failure_under_the_api_is_json_and_says_nothing_of_it(settings):
    settings.ROOT_URLCONF = "tests.api.urls_with_a_fault"
    client = Client(raise_request_exception=False)

    api = client.get("/api/v1/fault/")
    page = client.get("/fault/")

    assert api.status_code == 500
    assert api.json() == {
        "code": "server_error",
        "message": "Something went wrong on our side. Please try again later.",
    }
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")
