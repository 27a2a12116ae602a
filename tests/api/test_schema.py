"""The OpenAPI schema: valid OpenAPI 3, every /api/v1/ route in it (the REST API, the inbound
module triggers, the AI Guardian feed), and a browsable UI."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import URLPattern, URLResolver
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema

from integrations.guardian.signals import SIGNAL_FIELDS
from integrations.inbound.contracts import CONTRACTS
from integrations.inbound.models import Module
from payments.api import urls
from primoro_payments import urls as root_urls

pytestmark = pytest.mark.django_db


def _routes(patterns, prefix: str = "") -> set[str]:
    found = set()
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found |= _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            found.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return found


@pytest.fixture
def schema(client):
    GENERATOR_STATS.reset()
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_schema_is_valid_openapi_3_and_generated_without_warnings(schema):
    validate_schema(schema)

    assert schema["openapi"].startswith("3.")
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache


def test_every_api_route_is_in_the_schema_and_nothing_else(schema):
    everything_under_v1 = {
        route for route in _routes(root_urls.urlpatterns) if route.startswith("/api/v1/")
    }
    assert set(schema["paths"]) == _routes(urls.documented) == everything_under_v1
    assert len(schema["paths"]) == 15


def test_the_inbound_and_guardian_operations_describe_what_they_take(schema):
    inbound = schema["paths"]["/api/v1/inbound/{module}/{event_type}/"]
    assert set(inbound) == {"post"}
    parameters = {p["name"]: p for p in inbound["post"]["parameters"]}
    assert set(parameters["module"]["schema"]["enum"]) == set(Module.values)
    assert set(parameters["event_type"]["schema"]["enum"]) == {e for _m, e in CONTRACTS}
    assert parameters["X-Primoro-Event-Id"]["required"] is True
    guardian = schema["paths"]["/api/v1/guardian/signals/"]
    assert set(guardian) == {"get"}
    assert {p["name"] for p in guardian["get"]["parameters"]} == {
        "cursor",
        "since",
        "practice",
        "limit",
    }
    signal = schema["components"]["schemas"]["GuardianSignal"]
    assert list(signal["properties"]) == list(SIGNAL_FIELDS)


def test_operations_declare_their_security_and_errors(schema):
    schemes = schema["components"]["securitySchemes"]
    assert set(schemes) == {
        "patientJWT",
        "staffToken",
        "staffSession",
        "moduleSignature",
        "guardianToken",
    }
    assert schemes["moduleSignature"]["in"] == "header"
    assert schemes["moduleSignature"]["name"] == "X-Primoro-Signature"
    assert (schemes["guardianToken"]["type"], schemes["guardianToken"]["scheme"]) == (
        "http",
        "bearer",
    )
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security", [])
            errors = [code for code in operation["responses"] if code.startswith(("4", "5"))]
            for code in errors:
                ref = operation["responses"][code]["content"]["application/json"]["schema"]
                assert ref == {"$ref": "#/components/schemas/Error"}
            if path.startswith("/api/v1/inbound/"):
                assert security == [{"moduleSignature": []}], path
                continue  # not rate limited, no Idempotency-Key: the event id plays its part
            if path.startswith("/api/v1/guardian/"):
                assert security == [{"guardianToken": []}], path
                continue
            if path.startswith("/api/v1/patient/"):
                assert security == [{"patientJWT": []}], path
            elif path.startswith("/api/v1/staff/"):
                assert {k for s in security for k in s} == {"staffToken", "staffSession"}, path
            else:
                assert security in ([], [{}]), path  # pay-by-link: the token is the credential
            assert "429" in errors, (method, path)
            if method == "post":
                names = {p["name"] for p in operation.get("parameters", [])}
                assert "Idempotency-Key" in names, path


def test_the_browsable_ui_loads(client):
    page = client.get("/api/docs/")

    assert page.status_code == 200
    assert "swagger-ui" in page.content.decode()
    assert "/api/schema/" in page.content.decode()
