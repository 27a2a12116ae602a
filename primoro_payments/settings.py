"""Django settings, all from the environment (see `config.py` and README).

DEBUG=true is development: generated secrets are allowed and, when
DATABASE_URL / REDIS_URL are unset, an embedded PostgreSQL and Redis are
started under `.local/`. Anything else is production: secrets, DATABASE_URL and
REDIS_URL are required and the security settings are on.
"""

from __future__ import annotations

from urllib.parse import unquote

from django.core.exceptions import ImproperlyConfigured

from primoro_payments.config import BASE_DIR, announce_dev_secrets, env, secret

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = secret("SECRET_KEY", debug=DEBUG)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "pgtrigger",
    "practices",
    "terminals",
    "audit",
    "payments",
    "subscriptions",
    "integrations",
    "integrations.dna",
    "integrations.inbound",
    "payments.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "primoro_payments.logging.RequestIdMiddleware",
    "primoro_payments.api_errors.ApiJsonErrorsMiddleware",  # errors under /api/ are JSON
    "primoro_payments.pan_guard.PanGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "primoro_payments.urls"
WSGI_APPLICATION = "primoro_payments.wsgi.application"
ASGI_APPLICATION = "primoro_payments.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores -----------------------------------------------------------

if "DATABASE_URL" in env.ENVIRON or "DATABASE_URL_FILE" in env.ENVIRON:
    _database = env.db_url("DATABASE_URL")
elif DEBUG:
    from primoro_payments import localservices

    _database = env.db_url_config(localservices.postgres_url())
else:
    raise ImproperlyConfigured("DATABASE_URL must be set in production.")
_database["HOST"] = unquote(_database.get("HOST", ""))  # allow a %2F-encoded socket dir
_database.setdefault("OPTIONS", {})
_database["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
_database["CONN_HEALTH_CHECKS"] = True
_database["ATOMIC_REQUESTS"] = False
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if "REDIS_URL" in env.ENVIRON or "REDIS_URL_FILE" in env.ENVIRON:
    REDIS_URL = env.str("REDIS_URL")
elif DEBUG:
    from primoro_payments import localservices

    REDIS_URL = localservices.redis_url()
else:
    raise ImproperlyConfigured("REDIS_URL must be set in production.")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "primoro-payments",
    }
}

# --- Celery (primoro_payments/celery.py reads the CELERY_ namespace) --------

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Money work: acknowledge after the task ran, redeliver if the worker died,
# take one message at a time.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=120)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=100)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES_NAMES = ("webhooks", "outbox", "writeback", "default")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A redelivery window longer than the longest task, so acks_late never doubles work.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    # The outbox sweep: a lost "relay now" message only delays delivery by this much.
    "outbox-sweep": {
        "task": "integrations.tasks.sweep_outbox",
        "schedule": env.float("OUTBOX_SWEEP_SECONDS", default=15.0),
        "options": {"expires": 14},
    },
    # Stored provider events whose task message was lost, or that failed and may be retried.
    "webhook-sweep": {
        "task": "integrations.tasks.sweep_webhook_events",
        "schedule": env.float("WEBHOOK_SWEEP_SECONDS", default=30.0),
        "options": {"expires": 29},
    },
    # Refund approvals nobody decided in time expire (and change no money).
    "approvals-expire": {
        "task": "payments.tasks.expire_approvals",
        "schedule": 300.0,
        "options": {"expires": 290},
    },
    # Overdue balances: reminders on each practice's schedule, then a task (payments.overdue).
    "overdue-balances": {
        "task": "payments.tasks.process_overdue_balances",
        "schedule": 3600.0,
        "options": {"expires": 3500},
    },
    # DNA: pending provider operations and payments whose outcome is unknown (the janitor).
    "dna-janitor": {
        "task": "integrations.dna.tasks.janitor",
        "schedule": env.float("DNA_JANITOR_SECONDS", default=60.0),
        "options": {"expires": 55},
    },
    # DNA settlement batches → reconciled payments and reconciliation exceptions.
    "dna-reconcile-settlements": {
        "task": "integrations.dna.tasks.reconcile_settlements",
        "schedule": env.float("DNA_RECONCILE_SECONDS", default=3600.0),
        "options": {"expires": 3500},
    },
    # REST API Idempotency-Key records are kept 24 hours (payments/api/idempotency.py).
    "api-idempotency-expire": {
        "task": "payments.api.tasks.expire_idempotency_keys",
        "schedule": 3600.0,
        "options": {"expires": 3500},
    },
}

# --- Outbound module endpoints and the outbox relay (integrations/relay.py) ----
# <PREFIX>_URL and <PREFIX>_SECRET per destination; no URL = that destination is
# disabled (its rows are parked as "disabled", visible in the admin).


def _module_endpoint(prefix: str) -> dict:
    url = env.str(f"{prefix}_URL", default="").strip()
    return {"url": url, "secret": secret(f"{prefix}_SECRET", debug=DEBUG) if url else ""}


OUTBOX_ENDPOINTS = {
    "communication_hub": _module_endpoint("MODULE_COMMUNICATION_HUB"),
    "task_manager": _module_endpoint("MODULE_TASK_MANAGER"),
    "financial_insights": _module_endpoint("MODULE_FINANCIAL_INSIGHTS"),
    "rewards_manager": _module_endpoint("MODULE_REWARDS_MANAGER"),
    "care_plan": _module_endpoint("MODULE_CARE_PLAN"),
    "hygiene": _module_endpoint("MODULE_HYGIENE"),
    "inventory": _module_endpoint("MODULE_INVENTORY"),
    "telephony": _module_endpoint("MODULE_TELEPHONY"),
    "pms": _module_endpoint("PMS_WRITEBACK"),
}
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=10)
OUTBOX_BACKOFF_BASE_SECONDS = env.float("OUTBOX_BACKOFF_BASE_SECONDS", default=10.0)
OUTBOX_BACKOFF_CAP_SECONDS = env.float("OUTBOX_BACKOFF_CAP_SECONDS", default=900.0)
OUTBOX_LEASE_SECONDS = env.float("OUTBOX_LEASE_SECONDS", default=300.0)
OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS = env.float("OUTBOX_HTTP_CONNECT_TIMEOUT_SECONDS", default=3.0)
OUTBOX_HTTP_TIMEOUT_SECONDS = env.float("OUTBOX_HTTP_TIMEOUT_SECONDS", default=10.0)
OUTBOX_RELAY_TIME_BUDGET_SECONDS = env.float("OUTBOX_RELAY_TIME_BUDGET_SECONDS", default=60.0)
# Publish a relay task when a transaction that wrote outbox rows commits.
OUTBOX_RELAY_ON_COMMIT = env.bool("OUTBOX_RELAY_ON_COMMIT", default=not CELERY_TASK_ALWAYS_EAGER)

# Stored provider events whose processing fails (integrations/webhooks.py): retried with
# exponential backoff and full jitter (base doubling to the cap); a provider outage
# (RetryableWebhookError) is retried for the window after the event arrived, any other
# error for at most WEBHOOK_MAX_ERROR_ATTEMPTS attempts; then the event is parked.
WEBHOOK_BACKOFF_BASE_SECONDS = env.float("WEBHOOK_BACKOFF_BASE_SECONDS", default=60.0)
WEBHOOK_BACKOFF_CAP_SECONDS = env.float("WEBHOOK_BACKOFF_CAP_SECONDS", default=6 * 3600.0)
WEBHOOK_RETRY_WINDOW_SECONDS = env.int("WEBHOOK_RETRY_WINDOW_SECONDS", default=3 * 24 * 3600)
WEBHOOK_MAX_ERROR_ATTEMPTS = env.int("WEBHOOK_MAX_ERROR_ATTEMPTS", default=5)
# One beat sweep stops taking events after this long (below CELERY_TASK_SOFT_TIME_LIMIT).
WEBHOOK_SWEEP_TIME_BUDGET_SECONDS = env.float("WEBHOOK_SWEEP_TIME_BUDGET_SECONDS", default=60.0)

# --- Payment providers (integrations/dna, subscriptions/) --------------------
# Base URLs default to the local simulators (`python -m integrations.simulators`)
# in development; production must name the real hosts (see PROVIDERS.md).

_SIMULATED_DNA = "http://127.0.0.1:8601"
_SIMULATED_GOCARDLESS = "http://127.0.0.1:8602"
DNA_OAUTH_URL = env.str(
    "DNA_OAUTH_URL", default=_SIMULATED_DNA if DEBUG else "https://oauth.dnapayments.com"
)
DNA_API_URL = env.str(
    "DNA_API_URL", default=_SIMULATED_DNA if DEBUG else "https://api.dnapayments.com"
)
DNA_PAY_URL = env.str(
    "DNA_PAY_URL", default=_SIMULATED_DNA if DEBUG else "https://pay.dnapayments.com"
)
DNA_AXEPT_URL = env.str("DNA_AXEPT_URL", default=_SIMULATED_DNA + "/axept" if DEBUG else "")
DNA_CLIENT_ID = env.str("DNA_CLIENT_ID", default="primoro-dev" if DEBUG else "")
DNA_CLIENT_SECRET = secret("DNA_CLIENT_SECRET", debug=DEBUG)
DNA_TERMINAL_ID = env.str("DNA_TERMINAL_ID", default="primoro-online-dev" if DEBUG else "")
DNA_TERMINAL_MERCHANT_ID = env.str(
    "DNA_TERMINAL_MERCHANT_ID", default="primoro-dev" if DEBUG else ""
)
DNA_TERMINAL_KEY_ID = env.str("DNA_TERMINAL_KEY_ID", default="primoro-dev" if DEBUG else "")
DNA_TERMINAL_API_KEY = secret("DNA_TERMINAL_API_KEY", debug=DEBUG)
DNA_TERMINAL_WEBHOOK_SECRET = secret("DNA_TERMINAL_WEBHOOK_SECRET", debug=DEBUG)
DNA_TERMINAL_WEBHOOK_KEY_ID = env.str("DNA_TERMINAL_WEBHOOK_KEY_ID", default="dna-sim-terminal")
DNA_HTTP_CONNECT_TIMEOUT_SECONDS = env.float("DNA_HTTP_CONNECT_TIMEOUT_SECONDS", default=3.0)
DNA_HTTP_TIMEOUT_SECONDS = env.float("DNA_HTTP_TIMEOUT_SECONDS", default=15.0)
# integrations/dna (docs/providers.md): retries only where safe; "redirect" builds the
# simulator's hosted-page URL server-side, "script" uses DNA's payment-api.js (real hosts).
DNA_HTTP_RETRIES = env.int("DNA_HTTP_RETRIES", default=2)
DNA_CHECKOUT_MODE = env.str("DNA_CHECKOUT_MODE", default="redirect" if DEBUG else "script")
DNA_ONLINE_TRANSACTION_TYPE = env.str("DNA_ONLINE_TRANSACTION_TYPE", default="SALE")
# DNA publishes no hosted MOTO field: phone payments carry {"channel": "moto"} in
# merchantCustomData, and these paymentData fields (JSON, merged in) once DNA names one,
# e.g. {"transactionType": "MOTO"} or a MOTO terminal's {"paymentSettings": {...}}.
DNA_MOTO_PAYMENT_DATA = env.json("DNA_MOTO_PAYMENT_DATA", default={})
# DNA publishes no card-on-file (merchant-initiated) call; its path stays one setting away.
DNA_STORED_CARD_CHARGE_PATH = env.str(
    "DNA_STORED_CARD_CHARGE_PATH", default="/transaction/operation/stored-card-charge"
)
DNA_TERMINAL_TRANSACTION_SECONDS = env.int("DNA_TERMINAL_TRANSACTION_SECONDS", default=180)
DNA_TERMINAL_WEBHOOK_TOLERANCE_SECONDS = env.int(
    "DNA_TERMINAL_WEBHOOK_TOLERANCE_SECONDS", default=300
)
DNA_JANITOR_STALE_SECONDS = env.int("DNA_JANITOR_STALE_SECONDS", default=120)
DNA_CHECKOUT_ABANDON_SECONDS = env.int("DNA_CHECKOUT_ABANDON_SECONDS", default=7200)
# A virtual-terminal session left open this long (no outcome, not closed) is closed by the
# janitor, so call recording resumes (payments/flows.py).
DNA_VIRTUAL_TERMINAL_ABANDON_SECONDS = env.int("DNA_VIRTUAL_TERMINAL_ABANDON_SECONDS", default=900)
# The janitor pass (integrations/dna/janitor.py): at most this many payments, within this
# time budget (below CELERY_TASK_SOFT_TIME_LIMIT), each DNA look-up bounded by the timeout;
# a payment still waiting is asked again later the longer it has waited, at most this cap apart.
DNA_JANITOR_BATCH = env.int("DNA_JANITOR_BATCH", default=200)
DNA_JANITOR_TIME_BUDGET_SECONDS = env.float("DNA_JANITOR_TIME_BUDGET_SECONDS", default=60.0)
DNA_LOOKUP_TIMEOUT_SECONDS = env.float("DNA_LOOKUP_TIMEOUT_SECONDS", default=5.0)
DNA_JANITOR_RECHECK_CAP_SECONDS = env.int("DNA_JANITOR_RECHECK_CAP_SECONDS", default=3600)
DNA_OPERATION_LEASE_SECONDS = env.int("DNA_OPERATION_LEASE_SECONDS", default=60)
DNA_OPERATION_FLAG_AFTER_ATTEMPTS = env.int("DNA_OPERATION_FLAG_AFTER_ATTEMPTS", default=8)
DNA_SETTLEMENT_SOURCE = env.str(
    "DNA_SETTLEMENT_SOURCE", default="integrations.dna.settlement.SimulatorSettlementSource"
)
# Run a new provider operation right after its commit (off with eager Celery, like the relay).
DNA_OPERATIONS_ON_COMMIT = env.bool(
    "DNA_OPERATIONS_ON_COMMIT", default=not CELERY_TASK_ALWAYS_EAGER
)
GOCARDLESS_API_URL = env.str(
    "GOCARDLESS_API_URL", default=_SIMULATED_GOCARDLESS if DEBUG else "https://api.gocardless.com"
)
GOCARDLESS_ACCESS_TOKEN = secret("GOCARDLESS_ACCESS_TOKEN", debug=DEBUG)
GOCARDLESS_WEBHOOK_SECRET = secret("GOCARDLESS_WEBHOOK_SECRET", debug=DEBUG)
# Where providers reach us (callback and webhook URLs we hand them).
PUBLIC_BASE_URL = env.str(
    "PUBLIC_BASE_URL", default="http://127.0.0.1:" + env.str("PORT", default="8000")
)

# --- Inbound module triggers and the AI Guardian (docs/contracts.md) ---------
# INBOUND_<MODULE>_SECRET: the secret each calling module signs with. In
# production a module with no secret is refused (503); in development one is
# generated. GUARDIAN_API_TOKEN: the AI Guardian's read-only bearer token (no
# token: the interface is closed); GUARDIAN_PRACTICE_IDS optionally limits it.


def _optional_secret(name: str) -> str:
    configured = name in env.ENVIRON or f"{name}_FILE" in env.ENVIRON
    return secret(name, debug=DEBUG) if DEBUG or configured else ""


INBOUND_SECRETS = {
    module: _optional_secret(f"INBOUND_{module.upper()}_SECRET")
    for module in (
        "appointment_manager",
        "rewards_manager",
        "smart_treatment_proposals",
        "acp_finance_centre",
        "inventory_manager",
    )
}
INBOUND_SIGNATURE_TOLERANCE_SECONDS = env.int("INBOUND_SIGNATURE_TOLERANCE_SECONDS", default=300)
GUARDIAN_API_TOKEN = _optional_secret("GUARDIAN_API_TOKEN")
GUARDIAN_PRACTICE_IDS = env.list("GUARDIAN_PRACTICE_IDS", default=[])
GUARDIAN_SETTLE_SECONDS = env.float("GUARDIAN_SETTLE_SECONDS", default=2.0)

# --- Patient and tablet REST API (payments/api; docs/api.md) -----------------
# Patients send a JWT from the platform identity service, verified here against
# PATIENT_JWT_PUBLIC_KEYS (PEM public keys, several for rotation; or _FILE). In
# development with no keys a keypair is generated under .local/ and
# `manage.py patient_token` mints tokens with it.

PATIENT_JWT_ISSUER = env.str("PATIENT_JWT_ISSUER", default="primoro-identity-dev" if DEBUG else "")
PATIENT_JWT_AUDIENCE = env.str("PATIENT_JWT_AUDIENCE", default="primoro-payments")
PATIENT_JWT_PUBLIC_KEYS = env.str("PATIENT_JWT_PUBLIC_KEYS", default="")
PATIENT_JWT_ALGORITHMS = env.list("PATIENT_JWT_ALGORITHMS", default=["RS256", "ES256"])
PATIENT_JWT_LEEWAY_SECONDS = env.int("PATIENT_JWT_LEEWAY_SECONDS", default=30)
PATIENT_APP_RETURN_URL = env.str("PATIENT_APP_RETURN_URL", default="")
STAFF_API_TOKEN_DAYS = env.int("STAFF_API_TOKEN_DAYS", default=30)
API_NUM_PROXIES = env.int("API_NUM_PROXIES", default=0)
API_THROTTLE_RATES = {
    scope: env.str(f"API_THROTTLE_{scope.upper()}", default=rate)
    for scope, rate in {
        "patient": "300/min",
        "patient_pay": "20/min",
        "pay_ip": "60/min",
        "link": "120/min",
        "staff": "600/min",
        "patient_auth_failure": "30/min",  # failed patient tokens per client IP
    }.items()
}
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)

# --- Auth, i18n, static ----------------------------------------------------

AUTHENTICATION_BACKENDS = ["practices.backends.StaffModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# In development gunicorn serves static files through WhiteNoise straight from the finders.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Primoro Integrated Payments API",
    "VERSION": "1.0.0",
    # The API docs' UI assets are served from our own static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Security (production) -------------------------------------------------

SECURE_PROXY_SSL_HEADER = (
    tuple(env.list("SECURE_PROXY_SSL_HEADER")) if env.str("SECURE_PROXY_SSL_HEADER", "") else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Field encryption, MFA step-up, retention: docs/security.md (checks: primoro_payments/checks.py).
# FIELD_ENCRYPTION_KEYS: Fernet keys, comma-separated, newest first.
FIELD_ENCRYPTION_KEYS = secret("FIELD_ENCRYPTION_KEYS", debug=DEBUG)
MFA_STEP_UP_SECONDS = env.int("MFA_STEP_UP_SECONDS", default=900)
MFA_MAX_FAILURES = env.int("MFA_MAX_FAILURES", default=5)
MFA_LOCKOUT_SECONDS = env.int("MFA_LOCKOUT_SECONDS", default=900)
MFA_ISSUER = env.str("MFA_ISSUER", default="Primoro Payments")
# UK default: financial records are kept six years (HMRC); audit events as long.
RETENTION_FINANCIAL_YEARS = env.int("RETENTION_FINANCIAL_YEARS", default=6)
RETENTION_AUDIT_YEARS = env.int("RETENTION_AUDIT_YEARS", default=RETENTION_FINANCIAL_YEARS)

# --- Logging (structlog JSON; see primoro_payments/logging.py) -------------

# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`. Required in production;
# in development an unset token leaves /metrics open.
METRICS_TOKEN = (
    env.str("METRICS_TOKEN", default="") if DEBUG else secret("METRICS_TOKEN", debug=False)
)

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # json | console
LOGGING_CONFIG = None  # primoro_payments.logging.configure() sets everything up

from primoro_payments.logging import configure as _configure_logging  # noqa: E402

_configure_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)
announce_dev_secrets()
