# syntax=docker/dockerfile:1
# The production image. The web server (gunicorn) is the default command; the
# Celery worker and beat, the migration step and the provider simulators run
# from the same image with other commands (see docker-compose.yml).
# Configuration comes from the environment at run time (README, "Configuration").
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=primoro_payments.settings \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/primoro/metrics

RUN apt-get update \
    && apt-get install --yes --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group app \
    && install --directory --owner=app --group=app /var/lib/primoro/metrics

WORKDIR /app

# The pinned dependencies from pyproject.toml, in their own layer so that code
# changes do not reinstall them. The project runs from /app, not installed.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .

# Static files for whitenoise's manifest storage. Production settings insist on
# a secret and data-store URLs; these placeholders exist only for this command
# (nothing is contacted and nothing is kept).
RUN SECRET_KEY=collectstatic-build-step-placeholder \
    DATABASE_URL=postgres://build@127.0.0.1:1/build \
    REDIS_URL=redis://127.0.0.1:1/0 \
    DNA_CLIENT_SECRET=build-placeholder \
    DNA_TERMINAL_API_KEY=build-placeholder \
    DNA_TERMINAL_WEBHOOK_SECRET=build-placeholder \
    GOCARDLESS_ACCESS_TOKEN=build-placeholder \
    GOCARDLESS_WEBHOOK_SECRET=build-placeholder \
    METRICS_TOKEN=build-placeholder \
    FIELD_ENCRYPTION_KEYS=cGxhY2Vob2xkZXItb25seS1mb3ItY29sbGVjdHN0YXQ= \
    python manage.py collectstatic --noinput

USER app
EXPOSE 8000
# Workers: WEB_CONCURRENCY (gunicorn reads it), default 1. The config module routes the
# access log through the app's redacting log formatter and handles the metrics directory
# (PROMETHEUS_MULTIPROC_DIR, shared with the Celery workers: docs/runbook.md, "Metrics").
CMD ["gunicorn", "primoro_payments.wsgi", "--config=python:primoro_payments.gunicorn_conf", "--bind=0.0.0.0:8000", "--graceful-timeout=30", "--no-control-socket"]
