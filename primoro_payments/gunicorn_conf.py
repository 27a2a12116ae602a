"""Gunicorn settings shared by the Dockerfile, docker-compose.yml and `make run`.

    gunicorn primoro_payments.wsgi --config python:primoro_payments.gunicorn_conf --bind ...

Access and error lines go through the project's logging configuration
(`primoro_payments.logging.logging_config`), so the card-number redaction
applies to them too: the access line carries the raw path, query string and
Referer, which a refused request may hold a card number in.

With PROMETHEUS_MULTIPROC_DIR set (docs/runbook.md, "Metrics"), each web
worker and each Celery process writes its counters there and /metrics sums
them; `child_exit` tells prometheus_client when a web worker has gone.
"""

from __future__ import annotations

import os

from primoro_payments.config import env
from primoro_payments.logging import logging_config

accesslog = "-"
_config = logging_config(
    level=env.str("LOG_LEVEL", default="INFO"), fmt=env.str("LOG_FORMAT", default="json")
)
logconfig_dict = {
    **_config,
    "loggers": {
        **_config["loggers"],
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
