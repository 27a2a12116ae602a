"""`python -m integrations.simulators`: both servers up, URLs printed, clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_starts_both_simulators_and_stops_on_sigterm():
    env = {
        **os.environ,
        "DNA_CLIENT_SECRET": "main-test-secret",
        "DNA_TERMINAL_WEBHOOK_SECRET": "main-test-terminal-secret",
        "DNA_SIM_PORT": "0",
        "GOCARDLESS_SIM_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "integrations.simulators"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        urls = {}
        deadline = time.monotonic() + 30
        while len(urls) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            match = re.match(r"(dna|gocardless) simulator listening on (http://\S+)", line)
            if match:
                urls[match.group(1)] = match.group(2)
        index = httpx.get(f"{urls['dna']}/", timeout=5)
        token = httpx.post(
            f"{urls['dna']}/oauth2/token",
            data={"grant_type": "client_credentials", "scope": "webapi", "client_id": "any",
                  "client_secret": "main-test-secret"},
            timeout=5,
        )  # fmt: skip
        gc = httpx.post(f"{urls['gocardless']}/payments", timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)

    assert index.status_code == 200
    assert "DNA Payments simulator" in index.text
    assert token.status_code == 200
    assert gc.status_code == 405
    assert process.returncode == 0
    assert "Stopping the simulators" in output


def test_a_missing_secret_stops_it_with_a_clear_message(tmp_path):
    env = {
        **os.environ,
        "DNA_CLIENT_SECRET": "",
        "DNA_CLIENT_SECRET_FILE": str(tmp_path / "missing"),
        "DNA_SIM_PORT": "0",
        "GOCARDLESS_SIM_PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "integrations.simulators"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert result.returncode == 2
    assert "DNA_CLIENT_SECRET_FILE" in result.stderr
