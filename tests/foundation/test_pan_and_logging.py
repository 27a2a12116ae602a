"""Card numbers never reach a log line; request ids travel from web requests into tasks."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from django.http import HttpResponse

from primoro_payments.logging import REQUEST_ID_HEADER, RequestIdMiddleware
from primoro_payments.pan import contains_card_number, iter_card_numbers, redact_card_numbers

VISA_TEST = "4111111111111111"
AMEX_TEST = "378282246310005"


@pytest.mark.parametrize(
    "text",
    [
        VISA_TEST,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        f"card={AMEX_TEST};",
        "6011000990139424",  # 16-digit Discover test number
        "4222222222222",  # 13 digits
    ],
)
def test_card_numbers_are_found_and_redacted(text):
    assert contains_card_number(text)
    redacted = redact_card_numbers(text)
    assert not contains_card_number(redacted)
    assert "[REDACTED-PAN]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "123456789012",  # 12 digits: too short
        "41111111111111111111",  # 20 digits: too long to be a card
        "invoice INV-2026-000123 amount 120.00",
        "0f1e2d3c-4b5a-6978-8877-665544332211",
    ],
)
def test_other_numbers_are_left_alone(text):
    assert list(iter_card_numbers(text)) == []
    assert redact_card_numbers(text) == text


def test_structlog_line_has_card_number_redacted(log_output):
    structlog.get_logger("test").info(
        "patient read card out",
        note=f"number is {VISA_TEST}",
        nested={"pan": "4111 1111 1111 1111"},
    )
    output = log_output.getvalue()
    assert VISA_TEST not in output and "4111 1111 1111 1111" not in output
    line = json.loads(output.strip().splitlines()[-1])
    assert line["note"] == "number is [REDACTED-PAN]"
    assert line["nested"] == {"pan": "[REDACTED-PAN]"}
    assert line["event"] == "patient read card out"


def test_stdlib_log_line_and_traceback_are_redacted(log_output):
    logger = logging.getLogger("some.library")
    logger.warning("library saw %s", AMEX_TEST)
    try:
        raise ValueError(f"bad value {VISA_TEST}")
    except ValueError:
        logger.exception("failed")
    output = log_output.getvalue()
    assert AMEX_TEST not in output
    assert VISA_TEST not in output
    assert output.count("[REDACTED-PAN]") >= 2


def test_request_id_is_bound_to_log_lines_of_the_request(log_output, rf):
    def view(request):
        structlog.get_logger("test").info("inside the request")
        return HttpResponse("ok")

    response = RequestIdMiddleware(view)(rf.get("/", HTTP_X_REQUEST_ID="req-abc-123"))
    assert response[REQUEST_ID_HEADER] == "req-abc-123"
    inside = json.loads(log_output.getvalue().strip().splitlines()[-1])
    assert inside["event"] == "inside the request"
    assert inside["request_id"] == "req-abc-123"
    structlog.get_logger("test").info("after the request")
    assert "request_id" not in json.loads(log_output.getvalue().strip().splitlines()[-1])


def test_request_id_is_returned_or_generated(client, db):
    generated = client.get("/healthz")[REQUEST_ID_HEADER]
    assert len(generated) == 32 and generated != "req-abc-123"


def test_hostile_request_id_is_replaced(client, db):
    response = client.get("/healthz", headers={REQUEST_ID_HEADER: "x" * 500})
    assert response[REQUEST_ID_HEADER] != "x" * 500
    assert len(response[REQUEST_ID_HEADER]) == 32


def test_request_id_travels_into_published_task_headers():
    """The before_task_publish hook stamps the current request id on the message."""
    from celery import signals

    structlog.contextvars.bind_contextvars(request_id="req-into-task")
    headers: dict = {}
    try:
        signals.before_task_publish.send(sender="any.task", headers=headers, body=None)
    finally:
        structlog.contextvars.clear_contextvars()
    assert headers["request_id"] == "req-into-task"
