"""docker-compose.yml starts as documented: every secret production requires is supplied.

The compose file is read as Compose reads it (anchors, `${VAR:-default}` and
`${VAR:?error}`), scripts/compose_secrets.sh writes its secret files into a
temporary directory, and then `manage.py check --deploy` runs with exactly the
environment each app service would get, the /run/secrets/ paths pointing at
those files. Production settings refuse to load when a secret is missing, and
the production checks refuse local-only hosts and malformed keys, so adding a
required secret without adding it to compose (and the script) fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from primoro_payments.checks import REQUIRED_SECRETS

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web", "worker", "beat")
# What the simulators verify the app with: the same secret files as the app.
SHARED_WITH_SIMULATORS = (
    "DNA_CLIENT_SECRET",
    "DNA_TERMINAL_API_KEY",
    "DNA_TERMINAL_WEBHOOK_SECRET",
    "GOCARDLESS_ACCESS_TOKEN",
    "GOCARDLESS_WEBHOOK_SECRET",
)
PUBLIC_HOST = "payments.example.co.uk"
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's variable substitution: ${NAME}, ${NAME:-default}, ${NAME:?error}; $$ is $."""

    def substitute(match: re.Match) -> str:
        given = variables.get(match["name"], "")
        if given:
            return given
        if match["op"] == ":?":
            raise LookupError(f"{match['name']}: {match['arg']}")
        return match["arg"] or ""

    return _VARIABLE.sub(substitute, value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def secret_files(tmp_path_factory) -> dict[str, Path]:
    """The files scripts/compose_secrets.sh writes, by secret name."""
    target = tmp_path_factory.mktemp("compose-secrets")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "compose_secrets.sh")],
        env={**os.environ, "COMPOSE_SECRETS_DIR": str(target)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {path.name: path for path in target.iterdir()}


# What the README tells people to put in .env.
DOT_ENV = {"ALLOWED_HOSTS": PUBLIC_HOST, "PUBLIC_BASE_URL": f"https://{PUBLIC_HOST}"}


def service_environment(compose: dict, service: str, secret_files: dict[str, Path]) -> dict:
    """The container environment of `service`, its /run/secrets/ paths mapped to the files."""
    definition = compose["services"][service]
    mounted = set(definition.get("secrets", []))
    environment = {}
    for name, value in definition["environment"].items():
        value = interpolate(str(value), DOT_ENV)
        if name.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            assert value == f"/run/secrets/{secret}" and secret in mounted, (service, name)
            source = compose["secrets"][secret]["file"]
            assert source == f".local/compose-secrets/{secret}", (service, secret)
            assert secret_files[secret].read_text().strip(), f"{secret} is not created"
            value = str(secret_files[secret])
        environment[name] = value
    return environment


def test_the_script_creates_every_secret_the_compose_file_mounts(compose, secret_files):
    assert set(compose["secrets"]) <= set(secret_files)
    assert {secret["file"] for secret in compose["secrets"].values()} == {
        f".local/compose-secrets/{name}" for name in compose["secrets"]
    }


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_required_secret_reaches_each_app_service_as_a_file(compose, secret_files, service):
    environment = service_environment(compose, service, secret_files)

    for name in (*REQUIRED_SECRETS, "DATABASE_URL"):
        assert f"{name}_FILE" in environment, (service, name)
        assert name not in environment, (service, name)  # never a plain variable
    assert environment["DEBUG"] == "false"


def test_the_simulators_get_the_same_provider_secrets_as_the_app(compose, secret_files):
    app = service_environment(compose, "web", secret_files)
    simulators = service_environment(compose, "simulators", secret_files)

    for name in SHARED_WITH_SIMULATORS:
        assert simulators[f"{name}_FILE"] == app[f"{name}_FILE"], name


def test_the_public_host_is_required_and_the_health_check_host_kept(compose):
    hosts = compose["x-app"]["environment"]["ALLOWED_HOSTS"]

    with pytest.raises(LookupError, match="ALLOWED_HOSTS"):
        interpolate(hosts, {})
    assert interpolate(hosts, {"ALLOWED_HOSTS": PUBLIC_HOST}).split(",") == [
        PUBLIC_HOST,
        "127.0.0.1",
    ]
    assert "http://127.0.0.1:8000/readyz" in compose["services"]["web"]["healthcheck"]["test"]


def test_providers_default_to_the_bundled_simulators_and_the_public_address_is_required(compose):
    environment = compose["x-app"]["environment"]

    assert interpolate(environment["DNA_API_URL"], {}) == "http://simulators:8601"
    assert interpolate(environment["GOCARDLESS_API_URL"], {}) == "http://simulators:8602"
    assert interpolate(
        environment["DNA_API_URL"], {"DNA_API_URL": "https://api.dnapayments.com"}
    ) == ("https://api.dnapayments.com")
    with pytest.raises(LookupError, match="PUBLIC_BASE_URL"):
        interpolate(environment["PUBLIC_BASE_URL"], {})


def test_production_settings_load_and_pass_the_checks_with_the_compose_environment(
    compose, secret_files
):
    environments = [service_environment(compose, s, secret_files) for s in APP_SERVICES]
    # Alike but for the database: migrate connects as the owner, the rest as the runtime role.
    alike = [{**e, "DATABASE_URL_FILE": ""} for e in environments]
    assert all(environment == alike[0] for environment in alike)

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "primoro_payments.settings",  # the Dockerfile's
            **environments[0],
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr

    assert result.returncode == 0, output
    assert "primoro." not in output


def test_web_and_worker_share_the_metrics_directory_and_beat_has_a_health_check(compose):
    services = compose["services"]
    web, worker, beat = services["web"], services["worker"], services["beat"]
    mount = "metrics:/var/lib/primoro/metrics"
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert mount in web["volumes"] and mount in worker["volumes"]
    assert "PROMETHEUS_MULTIPROC_DIR=/var/lib/primoro/metrics" in dockerfile
    assert compose["volumes"]["metrics"]["driver_opts"]["type"] == "tmpfs"
    assert "--config=python:primoro_payments.gunicorn_conf" in web["command"]
    schedule = next(arg for arg in beat["command"] if arg.startswith("--schedule="))
    assert schedule == "--schedule=/tmp/celerybeat-schedule"
    assert "-name 'celerybeat-schedule*' -mmin -10" in beat["healthcheck"]["test"][1]


def test_only_migrate_connects_as_the_owner_and_it_grants_the_runtime_role(compose, secret_files):
    """The app's role owns nothing and may not change the audit trail (docs/security.md)."""
    urls = {
        service: secret_files[
            compose["services"][service]["environment"]["DATABASE_URL_FILE"].removeprefix(
                "/run/secrets/"
            )
        ].read_text()
        for service in APP_SERVICES
    }
    owner = urlsplit(urls.pop("migrate"))
    runtime = {urlsplit(url).username for url in urls.values()}
    migrate = compose["services"]["migrate"]
    script = " ".join(migrate["command"])
    password = secret_files["database_app_password"].read_text()

    assert owner.username == compose["services"]["postgres"]["environment"]["POSTGRES_USER"]
    assert runtime == {"primoro_app"}
    assert {urlsplit(url).password for url in urls.values()} == {password}
    assert "manage.py migrate --noinput && python manage.py db_grant_runtime_role primoro_app" in (
        script
    )
    assert "--password-file /run/secrets/database_app_password" in script
    assert "database_app_password" in migrate["secrets"]
    assert all(
        "database_url" not in compose["services"][s]["secrets"] for s in ("web", "worker", "beat")
    )
