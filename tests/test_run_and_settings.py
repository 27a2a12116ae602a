"""Production settings refuse weak secrets and turn security on; health probes; `make run` helpers.

Settings are read once per process, so each production case starts a fresh
Python with a minimal environment (nothing inherited from the developer's shell).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from tests.db import reconnected

ROOT = Path(__file__).resolve().parent.parent
STRONG_SECRET = "k7Qm2vX9pL4rT8wZ1nB6cY3hJ5dF0gS_strong-enough-for-tests"
# Every provider secret production requires, each with a real-looking value.
PROVIDER_SECRETS = (
    "DNA_CLIENT_SECRET",
    "DNA_TERMINAL_API_KEY",
    "DNA_TERMINAL_WEBHOOK_SECRET",
    "GOCARDLESS_ACCESS_TOKEN",
    "GOCARDLESS_WEBHOOK_SECRET",
    "METRICS_TOKEN",  # not a provider's either: /metrics is closed in production
    "FIELD_ENCRYPTION_KEYS",  # not a provider's, required all the same (docs/security.md)
)

PRINT_SETTINGS = """
import json
import django
django.setup()
from django.conf import settings
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "SECRET_KEY": settings.SECRET_KEY,
    "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
    "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": settings.SECURE_HSTS_INCLUDE_SUBDOMAINS,
    "SECURE_HSTS_PRELOAD": settings.SECURE_HSTS_PRELOAD,
    "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
    "SECURE_REDIRECT_EXEMPT": settings.SECURE_REDIRECT_EXEMPT,
    "STATICFILES_BACKEND": settings.STORAGES["staticfiles"]["BACKEND"],
}))
"""


def _django(env: dict[str, str], *, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "primoro_payments.settings",
        "DEBUG": "false",
        # Never contacted: setting up Django does not connect.
        "DATABASE_URL": "postgres://primoro@127.0.0.1:1/primoro",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        **{name: f"{STRONG_SECRET}-{name.lower()}" for name in PROVIDER_SECRETS},
    }
    environ = {name: value for name, value in {**base, **env}.items() if name not in drop}
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "secret_env",
    [
        {},
        {"SECRET_KEY": ""},
        {"SECRET_KEY": "dev-generated-looking-value"},
        {"SECRET_KEY": "changeme"},
    ],
    ids=["missing", "empty", "dev-prefixed", "weak"],
)
def test_production_refuses_to_start_without_a_real_secret_key(secret_env):
    result = _django(secret_env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set to a real secret" in result.stderr


def test_production_reads_the_secret_key_from_a_file(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text(STRONG_SECRET + "\n")

    settings = _settings(_django({"SECRET_KEY_FILE": str(secret_file)}))

    assert settings["SECRET_KEY"] == STRONG_SECRET


def test_production_refuses_a_development_secret_given_as_a_file(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text("dev-copied-from-a-laptop")

    result = _django({"SECRET_KEY_FILE": str(secret_file)})

    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set to a real secret" in result.stderr


@pytest.mark.parametrize("missing", PROVIDER_SECRETS)
def test_production_requires_every_provider_secret(missing):
    result = _django({"SECRET_KEY": STRONG_SECRET}, drop=(missing,))

    assert result.returncode != 0
    assert f"{missing} (or {missing}_FILE) must be set to a real secret" in result.stderr


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL"])
def test_production_requires_the_database_and_broker_urls(missing):
    result = _django({"SECRET_KEY": STRONG_SECRET}, drop=(missing,))

    assert result.returncode != 0
    assert f"{missing} must be set in production" in result.stderr


def test_production_security_settings_are_on():
    settings = _settings(_django({"SECRET_KEY": STRONG_SECRET}))

    assert settings == {
        "DEBUG": False,
        "SECRET_KEY": STRONG_SECRET,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_REDIRECT_EXEMPT": [r"^healthz$", r"^readyz$"],
        "STATICFILES_BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage",
    }


def test_development_generates_a_shared_secret_and_says_so():
    first = _django({"DEBUG": "true"})
    second = _django({"DEBUG": "true"})

    settings = _settings(first)
    assert settings["DEBUG"] is True
    assert settings["SECRET_KEY"].startswith("dev-")
    assert settings["SECURE_SSL_REDIRECT"] is False
    assert settings["SESSION_COOKIE_SECURE"] is False
    assert "DEVELOPMENT SECRETS in use for SECRET_KEY" in first.stderr
    # Every process (web, workers, simulators) gets the same generated value.
    assert _settings(second)["SECRET_KEY"] == settings["SECRET_KEY"]


# --- health probes ----------------------------------------------------------


def test_healthz_answers_without_touching_the_database(client):
    # No `db` fixture: pytest-django fails any query this test would make.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_answers_200_when_database_and_broker_answer(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": True, "broker": True},
        "down": [],
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_readyz_answers_503_naming_the_broker_when_redis_is_down(client):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0"):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": True, "broker": False},
        "down": ["broker"],
    }


@pytest.mark.django_db(transaction=True)  # no wrapping transaction: the connection may be reopened
def test_readyz_answers_503_naming_the_database_when_postgresql_is_unreachable(client):
    with reconnected(HOST="127.0.0.1", PORT=str(_closed_port())):
        response = client.get("/readyz")
    after_the_outage = client.get("/readyz")  # back at the real address: reconnects by itself

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": False, "broker": True},
        "down": ["database"],
    }
    assert after_the_outage.status_code == 200


def test_probes_accept_only_get(client):
    assert client.post("/healthz").status_code == 405


# --- the run command's supervisor (scripts/run.py) -------------------------


def _run_script():
    """scripts/run.py is a script, not a package module: load it by path (once)."""
    name = "primoro_run_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "run.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_run_defaults_to_development_but_keeps_explicit_settings():
    run = _run_script()
    fresh: dict[str, str] = {}
    explicit = {"DEBUG": "false", "PORT": "9000", "LOG_FORMAT": "json"}

    run.prepare_environment(fresh)
    run.prepare_environment(explicit)

    assert fresh["DEBUG"] == "true"
    assert fresh["PORT"] == "8000"
    assert fresh["DJANGO_SETTINGS_MODULE"] == "primoro_payments.settings"
    assert explicit == {
        "DEBUG": "false",
        "PORT": "9000",
        "LOG_FORMAT": "json",
        "DJANGO_SETTINGS_MODULE": "primoro_payments.settings",
        "PYTHONUNBUFFERED": "1",
    }


def test_run_starts_only_the_extra_commands_whose_module_exists():
    run = _run_script()
    commands = [
        ("present", "primoro_payments.celery", ["python", "-m", "primoro_payments.celery"]),
        ("package-without-main", "practices", ["python", "-m", "practices"]),
        ("missing", "integrations.no_such_simulator", ["python", "-m", "nothing"]),
        ("missing-package", "no_such_package.sub", ["python", "-m", "nothing"]),
    ]

    assert run.available_extra_commands(commands) == [
        ("present", ["python", "-m", "primoro_payments.celery"])
    ]


def test_run_supervises_web_worker_and_beat_on_every_queue(tmp_path):
    run = _run_script()

    children = {child.name: child.argv for child in run.build_children(8123, tmp_path)}

    assert children["web"][1:4] == ["-m", "gunicorn", "primoro_payments.wsgi"]
    assert "127.0.0.1:8123" in children["web"]
    web = children["web"]
    assert web[web.index("--config") + 1] == "python:primoro_payments.gunicorn_conf"
    worker = children["worker"]
    assert worker[worker.index("-Q") + 1] == "webhooks,outbox,writeback,default"
    beat = children["beat"]
    assert beat[beat.index("--schedule") + 1] == str(tmp_path / "celerybeat-schedule")


def test_run_gives_web_and_worker_one_emptied_metrics_directory(tmp_path):
    run = _run_script()
    environ: dict[str, str] = {}
    first = run.prepare_metrics_dir(environ, tmp_path)
    (first / "counter_123.db").write_bytes(b"old counts")
    (first / "notes.txt").write_text("not ours")

    again = run.prepare_metrics_dir(environ, tmp_path)

    assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "prometheus") == str(again)
    assert sorted(path.name for path in again.iterdir()) == ["notes.txt"]
