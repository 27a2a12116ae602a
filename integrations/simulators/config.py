"""Where the simulators find their settings: the environment, then the app's development secrets.

The secrets must be the very values our app uses (it verifies what the
simulators sign), so they come from the same variables (`DNA_CLIENT_SECRET`,
`DNA_TERMINAL_WEBHOOK_SECRET`, `GOCARDLESS_WEBHOOK_SECRET`, or `NAME_FILE`) and,
in development, from the file the app writes its generated secrets to
(`.local/dev-secrets.json`, see primoro_payments/config.py). The simulators
never invent or write a secret: a missing one stops them with a clear message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

# The same path as primoro_payments.config.DEV_SECRETS_FILE, computed here so the
# simulators start without importing Django or the Celery app.
DEV_SECRETS_FILE = Path(__file__).resolve().parents[2] / ".local" / "dev-secrets.json"


class SimulatorConfigError(RuntimeError):
    """A setting the simulators need is missing; the message says how to provide it."""


def _from_env(name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name, "").strip()
    if value:
        return value
    path = environ.get(f"{name}_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as error:
            raise SimulatorConfigError(f"{name}_FILE={path} cannot be read: {error}") from error
    return ""


def _from_dev_file(name: str, dev_file: Path) -> str:
    if not dev_file.exists():
        return ""
    try:
        known = json.loads(dev_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SimulatorConfigError(f"{dev_file} cannot be read: {error}") from error
    value = known.get(name, "") if isinstance(known, dict) else ""
    return value.strip() if isinstance(value, str) else ""


def optional_secret(
    name: str, *, environ: Mapping[str, str] | None = None, dev_file: Path | None = None
) -> str | None:
    """NAME, NAME_FILE or the development secrets file; None when none has it."""
    environ = os.environ if environ is None else environ
    value = _from_env(name, environ) or _from_dev_file(name, dev_file or DEV_SECRETS_FILE)
    return value or None


def required_secret(
    name: str, *, environ: Mapping[str, str] | None = None, dev_file: Path | None = None
) -> str:
    """Like optional_secret, but a missing value is a SimulatorConfigError saying what to do."""
    dev_file = dev_file or DEV_SECRETS_FILE
    value = optional_secret(name, environ=environ, dev_file=dev_file)
    if value is None:
        raise SimulatorConfigError(
            f"{name} is not configured: set {name} (or {name}_FILE) to the value the app "
            f"uses, or start the app once in DEBUG so it writes its development secrets "
            f"to {dev_file} (key {name!r}). The simulators never generate secrets."
        )
    return value


def env_int(name: str, default: int, *, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise SimulatorConfigError(f"{name} must be an integer, got {raw!r}") from error


def env_str(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(name, "").strip() or default
