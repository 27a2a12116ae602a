"""gunicorn's access log keeps no card number: it goes through the app's redacting log formatter.

The access line holds the raw path, query string and Referer; a request refused
for carrying a card number is still logged there. Real gunicorn, started with
the project's config (primoro_payments/gunicorn_conf.py) as the Dockerfile,
docker-compose.yml and `make run` start it.
"""

from __future__ import annotations

import json
import tempfile

import httpx
import pytest
from django.conf import settings

from primoro_payments.logging import REDACTED_TOKEN
from primoro_payments.pan import REDACTED, iter_card_numbers
from tests.faults.processes import app_env, gunicorn, wait_until

CARD = "4111111111111111"
GROUPED = "5555-5555-5555-4444"


def test_the_access_log_line_of_a_refused_card_number_holds_no_card_number():
    env = app_env(redis_url=settings.REDIS_URL, LOG_LEVEL="INFO", LOG_FORMAT="json")
    with tempfile.TemporaryFile() as log:
        with gunicorn(env, workers=1, log=log) as base:
            refused = httpx.get(
                f"{base}/healthz",
                params={"note": CARD},
                headers={"Referer": f"{base}/pay/?card={GROUPED}", "User-Agent": f"ua {CARD}"},
            )

            def access_lines() -> list[dict]:
                log.seek(0)
                return [
                    json.loads(line)
                    for line in log.read().decode().splitlines()
                    if line.startswith("{") and '"gunicorn.access"' in line
                ]

            lines = wait_until(
                lambda: [line for line in access_lines() if "/healthz?note=" in line["event"]],
                timeout=10,
            )
        log.seek(0)
        output = log.read().decode()

    assert refused.status_code == 400
    (line,) = lines
    assert f'"GET /healthz?note={REDACTED} HTTP/1.1" 400' in line["event"]
    assert f'"{base}/pay/?card={REDACTED}" "ua {REDACTED}"' in line["event"]
    assert list(iter_card_numbers(output)) == []
    assert "card_number_refused" in output  # the app's own lines are in the same output


@pytest.mark.django_db(transaction=True)  # the page looks the token up in the test database
def test_no_pay_by_link_token_reaches_the_log():
    token = "tok_" + "Ab9-_x" * 7
    env = app_env(redis_url=settings.REDIS_URL, LOG_LEVEL="INFO", LOG_FORMAT="json")
    with tempfile.TemporaryFile() as log, gunicorn(env, workers=1, log=log) as base:
        page = httpx.get(f"{base}/pay/{token}/", headers={"Referer": f"{base}/pay/{token}/"})

        def seen() -> str:
            log.seek(0)
            output = log.read().decode()
            return output if f"/pay/{REDACTED_TOKEN}/" in output else ""

        output = wait_until(seen, timeout=10)

    assert page.status_code == 404, output[-3000:]  # no such link; the log hides the token
    assert token not in output
    access = [line for line in output.splitlines() if '"gunicorn.access"' in line]
    assert access and f"GET /pay/{REDACTED_TOKEN}/ HTTP/1.1" in access[-1]
