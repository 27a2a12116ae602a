"""Simulators on ephemeral ports in this process, a local webhook receiver, and helpers."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from integrations.simulators import dna, gocardless

CLIENT_ID = "primoro-test"
CLIENT_SECRET = "test-client-secret-for-the-dna-simulator"
TERMINAL_SECRET = "test-terminal-webhook-secret"
TERMINAL_KEY_ID = "terminal-key-1"
TERMINAL_API_KEY = "test-axept-api-key"


@pytest.fixture
def dna_config(request):
    """The simulator's settings; parametrize indirectly with "quiet" for silent terminal time-outs."""
    return dna.DnaConfig(
        terminal_timeout_webhook=getattr(request, "param", "default") != "quiet",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        terminal_webhook_secret=TERMINAL_SECRET,
        terminal_webhook_key_id=TERMINAL_KEY_ID,
        terminal_api_key=TERMINAL_API_KEY,
        terminals=("TID001",),
        delivery_timeout=5.0,
    )


@pytest.fixture
def dna_url(dna_config):
    base_url, stop = dna.serve_in_thread(0, config=dna_config)
    yield base_url
    stop()


@pytest.fixture
def gc_url():
    base_url, stop = gocardless.serve_in_thread(0, access_token="gc-test-token")
    yield base_url
    stop()


@pytest.fixture
def http():
    with httpx.Client(timeout=10) as client:
        yield client


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body, parse_float=Decimal)


@dataclass
class Receiver:
    """A stand-in for our webhook endpoints: records every request, answers `status`."""

    base_url: str = ""
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < count and time.monotonic() < deadline:
                self.arrived.wait(deadline - time.monotonic())
            return list(self.requests)


@pytest.fixture
def receiver():
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.arrived:
                state.requests.append(
                    Received(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                state.arrived.notify_all()
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class PageParser(HTMLParser):
    """The tags of a page we assert on: inputs, buttons (with text), forms, the html lang."""

    def __init__(self):
        super().__init__()
        self.inputs: list[dict] = []
        self.buttons: list[dict] = []
        self.forms: list[dict] = []
        self.lang = None
        self.h1 = []
        self._button = None
        self._in_h1 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang")
        elif tag in {"input", "select", "textarea"}:
            self.inputs.append({"tag": tag, **attrs})
        elif tag == "form":
            self.forms.append(attrs)
        elif tag == "button":
            self._button = {**attrs, "text": ""}
        elif tag == "h1":
            self._in_h1 = True
            self.h1.append("")

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None:
            self.buttons.append(self._button)
            self._button = None
        elif tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._button is not None:
            self._button["text"] += data
        if self._in_h1:
            self.h1[-1] += data


def parse_page(html_text: str) -> PageParser:
    parser = PageParser()
    parser.feed(html_text)
    return parser


def future(hours: int = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def token(http, dna_url, scope, **extra) -> str:
    response = http.post(
        f"{dna_url}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            **extra,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}
