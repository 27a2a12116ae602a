"""A local consumer of our signed outbound messages, for tests and local runs.

`MessageSink` is what a well-behaved receiving module does: it verifies the
signature (docs/contracts.md), stores each message once by its event id (a
repeat is acknowledged and not stored again), and answers 2xx. It keeps every
request it saw (`received`, with the answer given), so tests can count raw
deliveries (`deliveries()`: how often each event id was taken in) against the
de-duplicated store (`stored`).

Failure modes for exercising the relay: `mode` "ok", "down" (503), "reject"
(400), an HTTP status such as "429", or "drop" (close the connection without
answering); `delay` seconds before answering; `crash_after(n)`
stores the n-th message, then drops that reply and every later request, as a
consumer that crashed right after committing would; `hold()` keeps every new
request waiting, unanswered and unrecorded, until `release()` (`held` counts
the requests that arrived meanwhile), so a test can act while a delivery is
certainly in flight. `stop()` closes the port
(connection refused); `start()` again reopens the same port with the same
stored messages, like a restarted consumer with a durable store.

Run one for every module locally with `python -m integrations.receivers`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from integrations.signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    verify,
)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    event_id: str
    event_type: str
    signature_valid: bool | None  # None: the sink was given no secret for this path
    duplicate: bool  # the event id was already stored when this request arrived
    status: int | None = None  # the answer's HTTP status; None: dropped without an answer
    accepted: bool = False  # taken in: stored now, or acknowledged (2xx) as a repeat

    @property
    def document(self) -> dict:
        return json.loads(self.body)


class MessageSink:
    """A threaded HTTP receiver that verifies, de-duplicates and records messages."""

    def __init__(self, *, secret: str | dict[str, str] | None = None, name: str = "sink"):
        self.secret = secret
        self.name = name
        self.mode = "ok"
        self.delay = 0.0
        self.received: list[Received] = []
        self.stored: dict[str, Received] = {}
        self._crash_after: int | None = None
        self._answering = threading.Event()
        self._answering.set()
        self.held = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.host = "127.0.0.1"

    # --- lifecycle ---

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, port: int | None = None, host: str | None = None) -> str:
        """Listen (port 0: any free port; a second start reuses the first port)."""
        self.host = host or self.host
        handler = type("Handler", (_Handler,), {"sink": self})
        self._server = ThreadingHTTPServer(
            (self.host, self.port if port is None else port), handler
        )
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns promptly
            name=f"{self.name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Close the port: callers now get connection refused."""
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MessageSink:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- behaviour ---

    def crash_after(self, count: int) -> None:
        """Store up to `count` messages, drop the reply to the last, then drop everything."""
        with self._lock:
            self._crash_after = count

    def hold(self) -> None:
        """Keep every new request waiting (unanswered, unrecorded) until `release()`."""
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    def secret_for(self, path: str) -> str | None:
        if isinstance(self.secret, dict):
            return self.secret.get(path)
        return self.secret

    def accept(self, received: Received) -> tuple[int, dict]:
        """The answer for a verified, first-seen message. Override to add semantics."""
        return 200, {"status": "stored", "event_id": received.event_id}

    def by_path(self, path: str) -> list[Received]:
        return [r for r in self.stored.values() if r.path == path]

    def deliveries(self) -> Counter[str]:
        """How many times each event id was taken in (stored, or acknowledged as a repeat).

        Requests answered with a failure (down, dropped, bad signature) are
        attempts, not deliveries, and are not counted.
        """
        with self._lock:
            return Counter(r.event_id for r in self.received if r.accepted)

    # --- request handling (called from the handler thread) ---

    def fault(self) -> tuple[int, dict] | None:
        """The failure the current mode answers with, if any. Override to add modes."""
        if self.mode.isdigit():
            return int(self.mode), {"error": f"simulated {self.mode}"}
        if self.mode == "down":
            return 503, {"error": "unavailable"}
        if self.mode == "reject":
            return 400, {"error": "rejected"}
        return None

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict] | None:
        """The status and JSON answer, or None to drop the connection unanswered.

        Every request is recorded in `received`, with its answer; only a
        verified, first-seen message answered 2xx is stored.
        """
        if not self._answering.is_set():
            with self._lock:
                self.held += 1
            self._answering.wait(timeout=120)
        if self.delay:
            time.sleep(self.delay)
        secret = self.secret_for(path)
        event_id = headers.get(EVENT_ID_HEADER.lower(), "")
        valid = None
        if secret is not None:
            try:
                verify(secret, headers.get(SIGNATURE_HEADER.lower()), body, event_id=event_id)
                valid = True
            except SignatureError:
                valid = False
        with self._lock:
            received = Received(
                path=path,
                headers=headers,
                body=body,
                event_id=event_id,
                event_type=headers.get(EVENT_TYPE_HEADER.lower(), ""),
                signature_valid=valid,
                duplicate=event_id in self.stored,
            )
            answer = self._answer(received)
            status = answer[0] if answer is not None else None
            stored_now = not received.duplicate and event_id in self.stored
            repeat_acknowledged = received.duplicate and status is not None and status < 300
            received = replace(received, status=status, accepted=stored_now or repeat_acknowledged)
            self.received.append(received)
            if stored_now:
                self.stored[event_id] = received
            return answer

    def _answer(self, received: Received) -> tuple[int, dict] | None:
        """Decide the answer (under the lock), storing a first-seen message that is accepted."""
        if self.mode == "drop":
            return None
        fault = self.fault()
        if fault is not None:
            return fault
        if received.signature_valid is False:
            return 401, {"error": "invalid signature"}
        if not received.event_id:
            return 400, {"error": "missing event id"}
        if received.duplicate:
            return 200, {"status": "duplicate", "event_id": received.event_id}
        answer = self.accept(received)
        if 200 <= answer[0] < 300:
            self.stored[received.event_id] = received
            if self._crash_after is not None and len(self.stored) >= self._crash_after:
                self.mode = "drop"
                return None
        return answer

    def _state(self) -> dict:
        with self._lock:
            return {
                "mode": self.mode,
                "requests": len(self.received),
                "stored": [
                    {"path": r.path, "event_id": r.event_id, "event_type": r.event_type}
                    for r in self.stored.values()
                ],
            }


class _Handler(BaseHTTPRequestHandler):
    sink: MessageSink
    server_version = "PrimoroSink/1"

    def log_message(self, *args) -> None:
        """Quiet: tests and local runs read the sink's records instead."""

    def _reply(self, status: int, document: dict) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/_sink":
            self._reply(200, self.sink._state())
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") == "/_sink/mode":
            self.sink.mode = json.loads(body or b"{}").get("mode", "ok")
            self._reply(200, {"mode": self.sink.mode})
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        answer = self.sink._handle(self.path, headers, body)
        if answer is None:
            self.close_connection = True
            return
        self._reply(*answer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local receiver for Primoro outbound messages.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--secret", default=None, help="verify signatures with this secret")
    args = parser.parse_args(argv)
    sink = MessageSink(secret=args.secret, name="modules")
    url = sink.start(port=args.port, host=args.host)
    print(f"Receiving signed messages on {url} (state: GET {url}/_sink)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sink.stop()


if __name__ == "__main__":
    main()
