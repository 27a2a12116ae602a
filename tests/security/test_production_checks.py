"""`manage.py check --deploy` passes with a production environment and refuses unsafe ones.

Settings are read once per process, so each case runs manage.py in a fresh
Python with a minimal production environment (nothing from the developer's
shell), as tests/test_run_and_settings.py does.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from primoro_payments.checks import REQUIRED_SECRETS, production_settings, provider_settings

ROOT = Path(__file__).resolve().parent.parent.parent
STRONG = "k7Qm2vX9pL4rT8wZ1nB6cY3hJ5dF0gS_strong-enough-for-tests"
# Two well-formed Fernet keys (fixed, so every xdist worker collects the same cases).
FIELD_KEYS = ",".join(base64.urlsafe_b64encode(seed * 32).decode() for seed in (b"n", b"o"))
PRODUCTION = {
    "DEBUG": "false",
    "DJANGO_SETTINGS_MODULE": "primoro_payments.settings",
    # Never contacted: `check` does not connect.
    "DATABASE_URL": "postgres://primoro@127.0.0.1:1/primoro",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "ALLOWED_HOSTS": "payments.example.co.uk",
    "SECRET_KEY": STRONG,
    "FIELD_ENCRYPTION_KEYS": FIELD_KEYS,
    "METRICS_TOKEN": f"{STRONG}-metrics",
    **{
        name: f"{STRONG}-{name.lower()}"
        for name in (
            "DNA_CLIENT_SECRET",
            "DNA_TERMINAL_API_KEY",
            "DNA_TERMINAL_WEBHOOK_SECRET",
            "GOCARDLESS_ACCESS_TOKEN",
            "GOCARDLESS_WEBHOOK_SECRET",
        )
    },
}


def _check(change: dict[str, str] | None = None, *, drop: tuple[str, ...] = ()):
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        **PRODUCTION,
        **(change or {}),
    }
    for name in drop:
        environ.pop(name)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, result.stdout + result.stderr


def test_a_proper_production_environment_passes_the_deployment_checks():
    result, output = _check()

    assert result.returncode == 0, output
    # Ours and Django's security checks are all satisfied (other apps may warn about their own).
    assert "primoro." not in output and "(security." not in output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ALLOWED_HOSTS": "*"}, "primoro.E001"),
        ({"FIELD_ENCRYPTION_KEYS": "not-a-fernet-key-but-long-enough"}, "primoro.E004"),
    ],
    ids=["wildcard-host", "bad-key"],
)
def test_unsafe_production_settings_stop_the_checks(change, expected):
    result, output = _check(change)

    assert result.returncode != 0
    assert expected in output


@pytest.mark.parametrize(
    ("change", "drop"),
    [({}, ("METRICS_TOKEN",)), ({"METRICS_TOKEN": ""}, ()), ({"METRICS_TOKEN": "dev-x"}, ())],
    ids=["unset", "empty", "dev"],
)
def test_production_does_not_start_with_metrics_open(change, drop):
    result, output = _check(change, drop=drop)

    assert result.returncode != 0
    assert "METRICS_TOKEN (or METRICS_TOKEN_FILE) must be set" in output


def test_development_leaves_metrics_open_without_a_token():
    result, output = _check({"DEBUG": "true"}, drop=("METRICS_TOKEN",))

    assert result.returncode == 0, output


def test_production_does_not_start_without_field_encryption_keys():
    result, output = _check(drop=("FIELD_ENCRYPTION_KEYS",))

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS (or FIELD_ENCRYPTION_KEYS_FILE) must be set" in output


@pytest.mark.parametrize("value", ["", "dev-generated-on-a-laptop"], ids=["empty", "dev"])
def test_production_does_not_start_with_empty_or_development_keys(value):
    result, output = _check({"FIELD_ENCRYPTION_KEYS": value})

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS (or FIELD_ENCRYPTION_KEYS_FILE) must be set" in output


def test_development_is_not_held_to_production_rules():
    result, output = _check({"DEBUG": "true", "ALLOWED_HOSTS": "*", "SECURE_SSL_REDIRECT": "false"})

    assert result.returncode == 0, output
    assert "primoro." not in output


@pytest.fixture
def production(settings):
    """This process's settings made production-like (the check reads them when called)."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["payments.example.co.uk"]
    settings.SECURE_SSL_REDIRECT = True
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.METRICS_TOKEN = STRONG
    settings.FIELD_ENCRYPTION_KEYS = FIELD_KEYS
    for name in REQUIRED_SECRETS[1:-1]:
        setattr(settings, name, f"{STRONG}-{name.lower()}")
    settings.SECRET_KEY = STRONG
    settings.OUTBOX_ENDPOINTS = {}
    return settings


def _issues() -> list[tuple[str, str]]:
    return [(issue.id, issue.msg) for issue in production_settings()]


def test_the_production_fixture_passes(production):
    assert _issues() == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ALLOWED_HOSTS", ["localhost", "127.0.0.1"], "primoro.E001"),
        ("ALLOWED_HOSTS", [], "primoro.E001"),
        ("SECURE_SSL_REDIRECT", False, "primoro.E002"),
        ("SECURE_HSTS_SECONDS", 3600, "primoro.E002"),
        ("SESSION_COOKIE_SECURE", False, "primoro.E002"),
        ("X_FRAME_OPTIONS", "SAMEORIGIN", "primoro.E002"),
        ("FIELD_ENCRYPTION_KEYS", f"{FIELD_KEYS},short", "primoro.E004"),
        ("METRICS_TOKEN", "", "primoro.E003"),
        ("RETENTION_FINANCIAL_YEARS", 3, "primoro.W002"),
    ],
    ids=[
        "local-hosts-only",
        "no-hosts",
        "no-https-redirect",
        "short-hsts",
        "insecure-session-cookie",
        "framable",
        "one-bad-key",
        "open-metrics",
        "short-retention",
    ],
)
def test_each_unsafe_setting_is_named(production, name, value, expected):
    setattr(production, name, value)

    assert [issue_id for issue_id, _msg in _issues()] == [expected]


def test_the_check_also_sees_secrets_changed_after_start_up(production):
    production.GOCARDLESS_WEBHOOK_SECRET = "changeme"
    production.OUTBOX_ENDPOINTS = {"pms": {"url": "https://pms.example/hook", "secret": ""}}

    assert _issues() == [
        ("primoro.E003", "GOCARDLESS_WEBHOOK_SECRET is missing, empty or a development value."),
        ("primoro.E003", "The outbound endpoint pms has a URL but no real signing secret."),
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (["MOTO"], "DNA_MOTO_PAYMENT_DATA must be a JSON object."),
        ({"amount": 1}, "DNA_MOTO_PAYMENT_DATA may not set amount: the payment sets it."),
        (
            {"paymentSettings": {"terminalId": "moto-1", "callbackUrl": "https://elsewhere"}},
            "DNA_MOTO_PAYMENT_DATA may not set paymentSettings.callbackUrl: the payment sets it.",
        ),
    ],
    ids=["not-an-object", "overrides-amount", "redirects-callbacks"],
)
def test_moto_payment_data_that_would_change_the_payment_stops_every_environment(
    settings, value, problem
):
    settings.DEBUG = True
    settings.DNA_MOTO_PAYMENT_DATA = value

    assert [(e.id, e.msg) for e in provider_settings()] == [("primoro.E005", problem)]


def test_moto_payment_data_that_adds_to_the_payment_passes(settings):
    settings.DNA_MOTO_PAYMENT_DATA = {
        "transactionType": "MOTO",
        "paymentSettings": {"terminalId": "moto-terminal"},
    }

    assert provider_settings() == []
