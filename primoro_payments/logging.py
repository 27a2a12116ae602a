"""Structured JSON logs (structlog) for web and worker, with request ids and PAN redaction.

Every log line, ours or a library's, goes through the same processors: the
request id bound for the current web request or Celery task, ISO UTC time,
and a final pass that replaces anything that looks like a card number.
The request id travels from the web request into every Celery task it
enqueues as a message header (see `primoro_payments/celery.py`).
"""

from __future__ import annotations

import logging
import logging.config
import re
import uuid

import structlog

from primoro_payments.pan import contains_card_number, redact_card_numbers, redact_value

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def redact_card_data(_logger, _method, event_dict):
    """structlog processor: no card number leaves the process in a log line."""
    return {key: redact_value(value) for key, value in event_dict.items()}


REDACTED_TOKEN = "[REDACTED-TOKEN]"
# A pay-by-link URL's token is the patient's key to pay: it must not sit in logs
# (access lines, "Not Found: /pay/..." warnings, a Referer) where a reader could use it.
_LINK_TOKEN = re.compile(r"(/pay/)[A-Za-z0-9_-]{8,}")


def redact_link_tokens(text: str) -> str:
    """`text` with every pay-by-link token in a /pay/<token> path replaced."""
    if "/pay/" not in text:
        return text
    return _LINK_TOKEN.sub(rf"\g<1>{REDACTED_TOKEN}", text)


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """Redacts the final rendered line too (tracebacks, exception messages, link tokens)."""

    def format(self, record):
        return redact_link_tokens(redact_card_numbers(super().format(record)))


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_card_data,
    ]


def _renderer(fmt: str):
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer(sort_keys=True, default=str)


def logging_config(*, level: str = "INFO", fmt: str = "json") -> dict:
    """The stdlib logging configuration: one console handler with the redacting formatter.

    Also given to gunicorn (primoro_payments/gunicorn_conf.py), so its access and
    error lines pass through the same redaction as ours.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": _RedactingFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _renderer(fmt),
                ],
                "foreign_pre_chain": [structlog.stdlib.ExtraAdder(), *_shared_processors()],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.server": {"level": "WARNING"},
            "django.db.backends": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def configure(*, level: str = "INFO", fmt: str = "json") -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_config(level=level, fmt=fmt))


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(candidate: str | None) -> str:
    """Accept a caller's request id only if it is short, plain and not a card number.

    Anything else is replaced, never refused: a proxy's request id that happened
    to look like a card number must not turn the request away, and the value is
    then neither logged, stored in audit events, echoed nor put on task messages.
    """
    if candidate and _VALID_REQUEST_ID.match(candidate) and not contains_card_number(candidate):
        return candidate
    return new_request_id()


def current_request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")


class RequestIdMiddleware:
    """Binds a request id (from X-Request-ID or new) to every log line of the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()
        response[REQUEST_ID_HEADER] = request_id
        return response
