"""DNA OAuth: client credentials, scopes, lifetimes, and refusal of a wrong secret."""

from __future__ import annotations

from tests.simulators.conftest import CLIENT_ID, CLIENT_SECRET, bearer


def _request(http, dna_url, **form):
    data = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    data.update(form)
    return http.post(f"{dna_url}/oauth2/token", data=data)


def test_webapi_token_lives_a_week(http, dna_url):
    response = _request(http, dna_url, scope="webapi")

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 604800
    assert body["scope"] == "webapi"
    assert len(body["access_token"]) >= 32


def test_checkout_token_lives_two_hours_and_needs_the_transaction(http, dna_url):
    ok = _request(
        http,
        dna_url,
        scope="payment integration_hosted",
        invoiceId="inv-1",
        amount="24.00",
        currency="GBP",
        terminal="online-1",
    )
    missing = _request(http, dna_url, scope="payment integration_hosted", invoiceId="inv-1")

    assert ok.status_code == 200
    assert ok.json()["expires_in"] == 7200
    assert ok.json()["scope"] == "payment integration_hosted"
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    assert "amount" in missing.json()["error_description"]


def test_bad_client_secret_is_401_json(http, dna_url):
    response = _request(http, dna_url, scope="webapi", client_secret="wrong")

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.json()


def test_bad_client_id_is_401(http, dna_url):
    assert _request(http, dna_url, scope="webapi", client_id="someone-else").status_code == 401


def test_unknown_scope_and_grant_type_are_refused(http, dna_url):
    assert _request(http, dna_url, scope="everything").json()["error"] == "invalid_scope"
    wrong_grant = _request(http, dna_url, scope="webapi", grant_type="password")
    assert wrong_grant.status_code == 400
    assert wrong_grant.json()["error"] == "unsupported_grant_type"


def test_a_token_from_a_bad_request_does_not_open_the_api(http, dna_url):
    response = http.get(
        f"{dna_url}/v2/transactions/inv-1/list?field=invoiceId", headers=bearer("forged")
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_a_pay_by_link_token_cannot_manage_transactions(http, dna_url):
    access_token = _request(http, dna_url, scope="pay_by_link").json()["access_token"]
    response = http.post(
        f"{dna_url}/transaction/operation/refund", json={"id": "x"}, headers=bearer(access_token)
    )
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
