"""System checks that refuse to run production with unsafe settings (docs/security.md).

Registered by `practices.apps.PracticesConfig.ready()`. They run on every
management command that checks (`migrate`, `check`, `runserver`), so the release
step (`manage.py migrate`) stops a production deployment that fails them, and
`manage.py check --deploy` reports them next to Django's own deployment checks.
In development (DEBUG) they say nothing.

`config.secret` already refuses a missing, empty or development secret when the
settings load; these checks cover what it cannot see: the host list, the
HTTPS settings, the field encryption keys' format, and secrets replaced after
loading (e.g. by a settings override).
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from primoro_payments import crypto
from primoro_payments.config import _WEAK_VALUES

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1", "testserver", "0.0.0.0"})  # noqa: S104
ONE_YEAR = 31_536_000
# Secrets production always needs (outbound module secrets are checked where a URL is set).
REQUIRED_SECRETS = (
    "SECRET_KEY",
    "DNA_CLIENT_SECRET",
    "DNA_TERMINAL_API_KEY",
    "DNA_TERMINAL_WEBHOOK_SECRET",
    "GOCARDLESS_ACCESS_TOKEN",
    "GOCARDLESS_WEBHOOK_SECRET",
    "METRICS_TOKEN",
    "FIELD_ENCRYPTION_KEYS",
)


def _weak(value) -> bool:
    text = str(value or "").strip()
    return not text or text.lower() in _WEAK_VALUES or text.startswith("dev-")


def _hosts() -> list[Error]:
    hosts = [str(host).strip().lower() for host in settings.ALLOWED_HOSTS]
    if not hosts:
        return [Error("ALLOWED_HOSTS is empty.", id="primoro.E001")]
    if any(host in ("*", ".") for host in hosts):
        return [
            Error(
                "ALLOWED_HOSTS holds a wildcard; name the public host names.",
                hint="e.g. ALLOWED_HOSTS=payments.example.co.uk",
                id="primoro.E001",
            )
        ]
    if all(host in LOCAL_HOSTS for host in hosts):
        return [
            Error(
                "ALLOWED_HOSTS names only local addresses; production needs its public host names.",
                id="primoro.E001",
            )
        ]
    return []


def _https() -> list[Error]:
    problems = []
    wanted = {
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    }
    for name, value in wanted.items():
        if getattr(settings, name, None) is not value:
            problems.append(Error(f"{name} must be True in production.", id="primoro.E002"))
    if (getattr(settings, "SECURE_HSTS_SECONDS", 0) or 0) < ONE_YEAR:
        problems.append(
            Error(
                "SECURE_HSTS_SECONDS must be at least one year (31536000) in production.",
                id="primoro.E002",
            )
        )
    if getattr(settings, "X_FRAME_OPTIONS", "") != "DENY":
        problems.append(Error("X_FRAME_OPTIONS must be DENY in production.", id="primoro.E002"))
    return problems


def _secrets() -> list[Error]:
    problems = [
        Error(
            f"{name} is missing, empty or a development value.",
            hint=f"Set {name} (or {name}_FILE) from the secrets store.",
            id="primoro.E003",
        )
        for name in REQUIRED_SECRETS
        if _weak(getattr(settings, name, ""))
    ]
    for destination, endpoint in getattr(settings, "OUTBOX_ENDPOINTS", {}).items():
        if endpoint.get("url") and _weak(endpoint.get("secret")):
            problems.append(
                Error(
                    f"The outbound endpoint {destination} has a URL but no real signing secret.",
                    id="primoro.E003",
                )
            )
    return problems


def _field_keys() -> list[Error]:
    try:
        crypto.parse_keys(getattr(settings, "FIELD_ENCRYPTION_KEYS", ""), allow_dev=False)
    except ImproperlyConfigured as error:
        return [Error(str(error), id="primoro.E004")]
    return []


def _advice() -> list[Warning]:
    found = []
    if getattr(settings, "RETENTION_FINANCIAL_YEARS", 6) < 6:
        found.append(
            Warning(
                "RETENTION_FINANCIAL_YEARS is below the UK default of 6 years.",
                id="primoro.W002",
            )
        )
    return found


# What a phone payment's own facts fill in; DNA_MOTO_PAYMENT_DATA may add to them only.
PAYMENT_OWNED_FIELDS = frozenset(
    {"invoiceId", "amount", "currency", "description", "merchantCustomData", "auth"}
)
PAYMENT_OWNED_SETTINGS = frozenset(
    {"returnUrl", "failureReturnUrl", "callbackUrl", "failureCallbackUrl"}
)


def moto_payment_data_problems(value) -> list[str]:
    """Why DNA_MOTO_PAYMENT_DATA cannot be merged into a phone payment's paymentData."""
    if not isinstance(value, dict):
        return ["DNA_MOTO_PAYMENT_DATA must be a JSON object."]
    problems = [
        f"DNA_MOTO_PAYMENT_DATA may not set {name}: the payment sets it."
        for name in sorted(PAYMENT_OWNED_FIELDS & value.keys())
    ]
    extra = value.get("paymentSettings", {})
    if not isinstance(extra, dict):
        problems.append("DNA_MOTO_PAYMENT_DATA's paymentSettings must be a JSON object.")
    else:
        problems += [
            f"DNA_MOTO_PAYMENT_DATA may not set paymentSettings.{name}: the payment sets it."
            for name in sorted(PAYMENT_OWNED_SETTINGS & extra.keys())
        ]
    return problems


@register()
def provider_settings(app_configs=None, **kwargs):
    """Provider settings that would break or misdirect payments, in every environment."""
    return [
        Error(
            problem,
            hint='e.g. DNA_MOTO_PAYMENT_DATA={"transactionType": "MOTO"}',
            id="primoro.E005",
        )
        for problem in moto_payment_data_problems(getattr(settings, "DNA_MOTO_PAYMENT_DATA", {}))
    ]


@register(Tags.security)
def production_settings(app_configs=None, **kwargs):
    """Hosts, HTTPS, secrets and encryption keys, in production only."""
    if settings.DEBUG:
        return []
    return [*_hosts(), *_https(), *_secrets(), *_field_keys(), *_advice()]
