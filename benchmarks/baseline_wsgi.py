"""The bare baselines of bench_webhooks: Django 5.2 with nothing of ours, under the same gunicorn.

Loaded by gunicorn as a top-level module (`--pythonpath benchmarks`
`baseline_wsgi:application`), never through the `benchmarks` package, whose
import sets up the real project. Settings are the minimum: no middleware, no
apps, the same database with the same persistent connections as the real app.

- `POST /noop/` answers a small JSON document (TARGETS.md: ~4,250 req/s).
- `POST /hmac-insert/` checks a hex HMAC-SHA256 of the raw body in
  `Webhook-Signature` (constant time, like the real receiver) and INSERTs the
  body as one row (TARGETS.md: ~1,830 req/s). The table is created by the bench.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import environ
from django.conf import settings

_database = environ.Env.db_url_config(os.environ["DATABASE_URL"])
_database["CONN_MAX_AGE"] = 60
_database["CONN_HEALTH_CHECKS"] = True

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ["SECRET_KEY"],
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={"default": _database},
    USE_TZ=True,
    LOGGING={  # errors only, to gunicorn's stderr
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler"}},
        "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
    },
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

_SECRET = os.environ["GOCARDLESS_WEBHOOK_SECRET"].encode()
TABLE = "bench_baseline_event"


def noop(_request):
    return JsonResponse({"status": "ok"})


def hmac_insert(request):
    body = request.body
    expected = hmac.new(_SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("Webhook-Signature", "")):
        return HttpResponse(status=498)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE} (body) VALUES (%s::jsonb)", [body.decode()])
    return JsonResponse({"stored": 1})


def healthz(_request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("noop/", noop),
    path("hmac-insert/", hmac_insert),
    path("healthz", healthz),
]

application = get_wsgi_application()
