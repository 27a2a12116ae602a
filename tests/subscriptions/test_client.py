"""The GoCardless client only reads: every public method is a GET, and none can collect."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import httpx
import pytest

from subscriptions import client as client_module
from subscriptions.client import (
    GoCardlessClient,
    GoCardlessCredentialsRefused,
    GoCardlessError,
    GoCardlessNotFound,
    GoCardlessUnavailable,
)
from tests.subscriptions.conftest import TOKEN, scenario, sim_requests

pytestmark = pytest.mark.django_db

# Every public attribute of the client, and how to call it against the simulator.
READS = {
    "get_payment": lambda c, ids: c.get_payment(ids["payment"]),
    "get_mandate": lambda c, ids: c.get_mandate(ids["mandate"]),
    "get_payout": lambda c, ids: c.get_payout(ids["payout"]),
    "list_payout_items": lambda c, ids: c.list_payout_items(ids["payout"]),
}
LIFECYCLE = {"close", "from_settings"}
WRITE_WORDS = re.compile(
    r"create|retry|cancel|submit|collect|charge|schedule|pause|resume|reinstate|update|"
    r"delete|post|put|patch|refund|approve|send|initiate|action",
    re.IGNORECASE,
)


class RecordingTransport(httpx.BaseTransport):
    """A real HTTP transport that remembers the method and path of every request it sends."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.sent: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _public_members() -> set[str]:
    return {name for name, _ in inspect.getmembers(GoCardlessClient) if not name.startswith("_")}


@pytest.fixture
def paid_out(gc_api, practice, patient):
    built = scenario("payment_paid_out", practice, patient, mandate_ref="PMREF-CLIENT-1")
    from integrations.simulators import gocardless

    gocardless.publish_resources(gc_api, built)
    event = built.events[0]
    return {
        "payment": event["links"]["payment"],
        "payout": event["links"]["payout"],
        "mandate": built.resources["mandates"][0]["id"],
    }


def test_the_client_exposes_reads_only():
    members = _public_members()

    assert members == set(READS) | LIFECYCLE
    assert all(re.match(r"(get|list)_", name) for name in members - LIFECYCLE)
    assert [name for name in members if WRITE_WORDS.search(name)] == []


def test_every_public_method_issues_get_only(gc_api, paid_out):
    transport = RecordingTransport()
    requests_before = len(sim_requests(gc_api))

    with GoCardlessClient.from_settings(transport=transport) as gc:
        results = {name: call(gc, paid_out) for name, call in READS.items()}

    assert {method for method, _ in transport.sent} == {"GET"}
    assert sorted(path for _, path in transport.sent) == sorted(
        [
            f"/payments/{paid_out['payment']}",
            f"/mandates/{paid_out['mandate']}",
            f"/payouts/{paid_out['payout']}",
            "/payout_items",
        ]
    )
    seen = sim_requests(gc_api)[requests_before:]
    assert [entry["method"] for entry in seen] == ["GET"] * 4
    assert results["get_mandate"].reference == "PMREF-CLIENT-1"
    assert results["get_payment"].amount_minor == 5000
    assert results["get_payout"].deducted_fees_minor == 109
    assert [(i.type, i.amount_minor, i.tax_minor) for i in results["list_payout_items"]] == [
        ("payment_paid_out", 5000, 0),
        ("gocardless_fee", -84, -14),
        ("app_fee", -25, 0),
    ]


def test_the_source_uses_no_http_verb_but_get():
    source = Path(client_module.__file__).read_text()

    assert set(re.findall(r"self\._http\.(\w+)\(", source)) == {"get", "close"}
    assert re.search(r"\b(httpx\.(post|put|patch|delete|request)|\.request\()", source) is None


def test_requests_carry_the_token_and_the_version_header(gc_api, paid_out):
    with GoCardlessClient.from_settings() as gc:
        gc.get_payment(paid_out["payment"])

    [entry] = sim_requests(gc_api)[-1:]
    assert entry["headers"]["gocardless-version"] == "2015-07-06"
    assert entry["headers"]["authorization"] == "Bearer [redacted]"


def test_a_missing_resource_is_not_found(gc_api):
    with GoCardlessClient.from_settings() as gc, pytest.raises(GoCardlessNotFound):
        gc.get_payment("PM0000NOTHERE")


def test_a_refused_token_is_retried_later_not_taken_as_unknown(gc_api, settings):
    settings.GOCARDLESS_ACCESS_TOKEN = TOKEN + "-wrong"
    with GoCardlessClient.from_settings() as gc, pytest.raises(GoCardlessCredentialsRefused):
        gc.get_payment("PM0000NOTHERE")

    assert issubclass(GoCardlessCredentialsRefused, GoCardlessUnavailable)


def test_an_invalid_request_is_a_permanent_error(gc_api, settings):
    httpx.post(f"{gc_api}/sim/faults", json={"path_prefix": "/payments/", "mode": "422"}, timeout=5)

    with GoCardlessClient.from_settings() as gc, pytest.raises(GoCardlessError) as caught:
        gc.get_payment("PM0000NOTHERE")

    assert not isinstance(caught.value, GoCardlessNotFound)


@pytest.mark.parametrize("mode", ["503", "429", "drop"])
def test_transient_failures_are_unavailable(gc_api, paid_out, mode):
    httpx.post(f"{gc_api}/sim/faults", json={"path_prefix": "/payments/", "mode": mode}, timeout=5)

    with GoCardlessClient.from_settings() as gc, pytest.raises(GoCardlessUnavailable):
        gc.get_payment(paid_out["payment"])


def test_a_slow_api_times_out_as_unavailable(gc_api, paid_out, settings):
    settings.GOCARDLESS_HTTP_TIMEOUT_SECONDS = 0.3
    httpx.post(
        f"{gc_api}/sim/faults",
        json={"path_prefix": "/payments/", "mode": "timeout", "seconds": 2},
        timeout=5,
    )

    with GoCardlessClient.from_settings() as gc, pytest.raises(GoCardlessUnavailable):
        gc.get_payment(paid_out["payment"])


@pytest.mark.parametrize("bad_id", ["../payouts", "PM1?x=1", "", "PM 1"])
def test_ids_that_are_not_gocardless_ids_never_reach_a_url(gc_api, bad_id):
    before = len(sim_requests(gc_api))

    with GoCardlessClient.from_settings() as gc, pytest.raises(GoCardlessNotFound):
        gc.get_payment(bad_id)

    assert len(sim_requests(gc_api)) == before
