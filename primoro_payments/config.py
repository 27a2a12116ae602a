"""The one place that reads the environment.

Settings come from environment variables (12-factor) through django-environ's
`FileAwareEnv`, so every variable may instead be given as `NAME_FILE`, the path
of a file holding the value (the Docker secrets convention).

Secrets are never in the repository. In development (DEBUG) a missing secret is
generated once, kept in `.local/dev-secrets.json` so that the web process, the
workers and the simulators agree on it, and announced loudly. In production a
missing, empty or known-development secret stops the process at start-up.
"""

from __future__ import annotations

import json
import logging
import secrets as _secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.FileAwareEnv()

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRETS_FILE = BASE_DIR / ".local" / "dev-secrets.json"
_WEAK_VALUES = {"", "changeme", "change-me", "secret", "dev", "development", "insecure"}

logger = logging.getLogger("primoro_payments.config")


def _dev_secret(name: str) -> str:
    DEV_SECRETS_FILE.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(DEV_SECRETS_FILE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known = json.loads(DEV_SECRETS_FILE.read_text()) if DEV_SECRETS_FILE.exists() else {}
        if name not in known:
            known[name] = "dev-" + _secrets.token_urlsafe(32)
            DEV_SECRETS_FILE.write_text(json.dumps(known, indent=2, sort_keys=True))
            DEV_SECRETS_FILE.chmod(0o600)
    _generated_in_use.append(name)
    return known[name]


_generated_in_use: list[str] = []


def announce_dev_secrets() -> None:
    """Say loudly, once per process, which secrets are generated development values."""
    if _generated_in_use:
        logger.warning(
            "DEVELOPMENT SECRETS in use for %s (generated, stored in %s). "
            "Never run production like this.",
            ", ".join(_generated_in_use),
            DEV_SECRETS_FILE,
        )
        _generated_in_use.clear()


def secret(name: str, *, debug: bool) -> str:
    """A secret from NAME or NAME_FILE; a generated value in development only."""
    value = env.str(name, default="").strip()
    if value and value.lower() not in _WEAK_VALUES and not value.startswith("dev-"):
        return value
    if debug:
        return value or _dev_secret(name)
    raise ImproperlyConfigured(
        f"{name} (or {name}_FILE) must be set to a real secret in production; "
        "it is missing, empty or a development value."
    )


def dev_secrets() -> dict[str, str]:
    """The generated development secrets, for printing at `make run` start-up."""
    if DEV_SECRETS_FILE.exists():
        return json.loads(DEV_SECRETS_FILE.read_text())
    return {}
