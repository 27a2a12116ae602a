"""The small HTTP toolkit both simulators share: routing, the request log, fault injection.

Built on the standard library's ThreadingHTTPServer so a simulator starts in a
few milliseconds inside a pytest fixture (`serve_in_thread(app, port=0)`) as
well as in `python -m integrations.simulators`, with no extra dependency.

Every simulator has the same control plane under `/sim/` (never subject to
faults, never part of a provider contract):

- `POST /sim/faults` `{"path_prefix": "/v1/", "mode": "timeout"|"drop"|"500"|"<status>",
  "count": N, "method": "POST"?, "seconds": 30?}`: the next N matching calls fail
  *before* they have any effect. `timeout` waits `seconds` (default 30) and then
  answers 504; `drop` closes the connection without an answer; a status code
  answers that status with `{"code": "simulated_fault"}`.
  `GET /sim/faults` lists the armed faults.
- `GET /sim/requests[?path_prefix=...]`: the received requests (but these), oldest first:
  method, path, query, a few headers and the parsed body, with secrets and
  card-adjacent fields replaced by "[redacted]".
- `POST /sim/reset`: forget all state, the log and the faults.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

logger = logging.getLogger("integrations.simulators")

REDACTED = "[redacted]"
# Field names whose values never appear in the request log or the delivery log.
SENSITIVE_FIELDS = frozenset(
    {
        "client_secret",
        "key",
        "access_token",
        "refresh_token",
        "token",
        "auth",
        "params",
        "signature",
        "cardTokenId",
        "cardPanStarred",
        "cardExpiryDate",
    }
)
LOGGED_HEADERS = (
    "content-type",
    "accept",
    "user-agent",
    "authorization",
    "idempotency-key",
    "gocardless-version",
    "origin",
)
MAX_BODY_BYTES = 1_000_000
MAX_FAULT_SECONDS = 600


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with milliseconds and a Z, the form the providers use."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso8601(value: str) -> datetime:
    """An aware datetime from ISO 8601 (a trailing Z allowed); naive values are taken as UTC."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def json_number(value: Decimal) -> int | float:
    """A Decimal as the shortest JSON number: 24 (not 24.0), 12.5 (not 12.50).

    Python's float repr is the shortest text that reads back to the same float,
    so money with two decimals survives unchanged; the simulators only ever do
    arithmetic on the Decimal.
    """
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return json_number(value)
    if isinstance(value, datetime):
        return isoformat(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dump_json(payload: Any) -> bytes:
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode()


def redact(value: Any) -> Any:
    """A copy with sensitive fields replaced, for the logs the simulators expose."""
    if isinstance(value, dict):
        return {
            key: (REDACTED if key in SENSITIVE_FIELDS and item not in (None, "") else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


class HttpError(Exception):
    """Raised by a handler to answer with an error body in the simulator's own format."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    _json: Any = field(default=None, repr=False)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.strip() if isinstance(value, str) else None

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    @property
    def bearer(self) -> str | None:
        value = self.header("Authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, numbers with a fraction parsed as Decimal."""
        if self._json is None:
            try:
                parsed = json.loads(self.body or b"null", parse_float=Decimal)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise HttpError(400, "invalid_json", f"The body is not JSON: {error}") from error
            if not isinstance(parsed, dict):
                raise HttpError(400, "invalid_json", "The body must be a JSON object.")
            self._json = parsed
        return self._json

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body (last value wins)."""
        try:
            text = self.body.decode()
        except UnicodeDecodeError as error:
            raise HttpError(400, "invalid_form", "The form body is not UTF-8.") from error
        return {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}

    def loggable_body(self) -> Any:
        if not self.body:
            return None
        if self.content_type == "application/json":
            try:
                return redact(json.loads(self.body, parse_float=str))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {"unparsed_bytes": len(self.body)}
        if self.content_type == "application/x-www-form-urlencoded":
            try:
                return redact(self.form())
            except HttpError:
                return {"unparsed_bytes": len(self.body)}
        return {"unparsed_bytes": len(self.body)}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


DROP = Response(status=0)  # sentinel: close the connection without answering


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None):
    return Response(status=status, body=dump_json(payload), headers=dict(headers or {}))


def html_response(html: str, status: int = 200) -> Response:
    return Response(status=status, body=html.encode(), content_type="text/html; charset=utf-8")


def redirect(location: str, status: int = 303) -> Response:
    return Response(status=status, content_type="text/plain", headers={"Location": location})


@dataclass
class Fault:
    path_prefix: str
    mode: str
    remaining: int
    method: str | None = None
    seconds: float = 30.0

    def matches(self, request: Request) -> bool:
        return request.path.startswith(self.path_prefix) and (
            self.method is None or self.method == request.method
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "path_prefix": self.path_prefix,
            "mode": self.mode,
            "count": self.remaining,
            "method": self.method,
            "seconds": self.seconds,
        }


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class SimulatorApp:
    """Routes requests to handlers and owns the control plane; subclasses add the provider."""

    name = "simulator"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.base_url = ""
        self.verbose = False
        self.stopping = threading.Event()
        self._requests: deque[dict[str, Any]] = deque(maxlen=2000)
        self._faults: list[Fault] = []
        self._routes: list[Route] = []
        self.route("POST", r"/sim/faults", self._sim_add_fault)
        self.route("GET", r"/sim/faults", self._sim_list_faults)
        self.route("GET", r"/sim/requests", self._sim_requests)
        self.route("POST", r"/sim/reset", self._sim_reset)

    # -- wiring -------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register handler(request, **named_groups) for METHOD and a full-path regex."""
        self._routes.append(Route(method, re.compile(f"^{pattern}$"), handler))

    def bind(self, base_url: str) -> None:
        """Called once the server is listening; the public base URL may already be set."""
        if not self.base_url:
            self.base_url = base_url.rstrip("/")

    def reset_state(self) -> None:
        """Subclasses clear their provider state here."""

    def error_response(self, error: HttpError) -> Response:
        """Subclasses answer errors in their provider's format."""
        return json_response(
            {"code": error.code, "message": error.message, **error.extra}, error.status
        )

    # -- request handling -----------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        if request.path != "/sim/requests":  # reading the log does not add to it
            self._log(request)
        if not request.path.startswith("/sim/"):
            fault = self._take_fault(request)
            if fault is not None:
                return self._apply_fault(fault)
        try:
            return self.handle(request)
        except HttpError as error:
            return self.error_response(error)

    def handle(self, request: Request) -> Response:
        allowed: set[str] = set()
        for route in self._routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            if route.method == request.method or (
                request.method == "HEAD" and route.method == "GET"
            ):
                return route.handler(request, **match.groupdict())
            allowed.add(route.method)
        if allowed:
            response = self.error_response(
                HttpError(405, "method_not_allowed", f"{request.method} is not allowed here.")
            )
            response.headers["Allow"] = ", ".join(sorted(allowed))
            return response
        raise HttpError(404, "not_found", f"Nothing at {request.path}.")

    def _log(self, request: Request) -> None:
        headers = {}
        for name in LOGGED_HEADERS:
            value = request.header(name)
            if value is None:
                continue
            if name == "authorization":
                value = f"{value.partition(' ')[0]} {REDACTED}"
            headers[name] = value
        entry = {
            "at": isoformat(utcnow()),
            "method": request.method,
            "path": request.path,
            "query": redact(dict(request.query)),
            "headers": headers,
            "body": request.loggable_body(),
        }
        with self.lock:
            self._requests.append(entry)

    def _take_fault(self, request: Request) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.matches(request):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _apply_fault(self, fault: Fault) -> Response:
        if fault.mode == "drop":
            return DROP
        if fault.mode == "timeout":
            self.stopping.wait(fault.seconds)
            return json_response({"code": "simulated_timeout"}, 504)
        return json_response(
            {"code": "simulated_fault", "message": "Injected fault."}, int(fault.mode)
        )

    # -- control plane ------------------------------------------------------

    def _sim_add_fault(self, request: Request) -> Response:
        data = request.json()
        prefix = data.get("path_prefix")
        mode = str(data.get("mode", ""))
        count = data.get("count", 1)
        method = data.get("method")
        seconds = data.get("seconds", 30)
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise HttpError(400, "invalid_fault", "path_prefix must be a path starting with /.")
        if mode not in {"timeout", "drop"} and not (mode.isdigit() and 400 <= int(mode) <= 599):
            raise HttpError(400, "invalid_fault", "mode must be timeout, drop or a 4xx/5xx status.")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise HttpError(400, "invalid_fault", "count must be a positive integer.")
        try:
            seconds = float(seconds)
        except (TypeError, ValueError, InvalidOperation) as error:
            raise HttpError(400, "invalid_fault", "seconds must be a number.") from error
        if not 0 <= seconds <= MAX_FAULT_SECONDS:
            raise HttpError(400, "invalid_fault", f"seconds must be 0..{MAX_FAULT_SECONDS}.")
        fault = Fault(
            path_prefix=prefix,
            mode=mode,
            remaining=count,
            method=method.upper() if isinstance(method, str) else None,
            seconds=seconds,
        )
        with self.lock:
            self._faults.append(fault)
        return json_response(fault.as_dict(), 201)

    def _sim_list_faults(self, request: Request) -> Response:
        with self.lock:
            return json_response({"faults": [fault.as_dict() for fault in self._faults]})

    def _sim_requests(self, request: Request) -> Response:
        prefix = request.query.get("path_prefix", "")
        with self.lock:
            entries = [entry for entry in self._requests if entry["path"].startswith(prefix)]
        return json_response({"requests": entries})

    def _sim_reset(self, request: Request) -> Response:
        with self.lock:
            self._requests.clear()
            self._faults.clear()
            self.reset_state()
        return json_response({"reset": True})


class _RequestHandler(BaseHTTPRequestHandler):
    app: SimulatorApp
    server_version = "PrimoroSimulator/1.0"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        request = Request(
            method=self.command, path=split.path, query=query, headers=self.headers, body=body
        )
        try:
            response = self.app.dispatch(request)
        except Exception:  # process boundary: log it and answer 500
            logger.exception(
                "%s simulator failed on %s %s", self.app.name, self.command, split.path
            )
            response = json_response({"code": "simulator_error"}, 500)
        if response is DROP:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. after a timeout fault)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.app.verbose:
            sys.stderr.write(f"[{self.app.name}] {self.address_string()} {format % args}\n")


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass(frozen=True)
class DeliveryResult:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> DeliveryResult:
    """POST body to url once, with a timeout; a failure is reported, never raised."""
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as error:
        return DeliveryResult(None, f"{type(error).__name__}: {error}")
    return DeliveryResult(response.status_code, None)


def make_server(app: SimulatorApp, *, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
    """A listening server for app (port 0 = any free port); app learns its base URL."""
    handler = type(f"{type(app).__name__}Handler", (_RequestHandler,), {"app": app})
    server = SimulatorServer((host, port), handler)
    app.bind(f"http://{host}:{server.server_address[1]}")
    return server


def serve_in_thread(
    app: SimulatorApp, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Run app on a daemon thread; returns (base_url, stop). stop() is idempotent."""
    server = make_server(app, host=host, port=port)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name=f"{app.name}-simulator",
        daemon=True,
    )
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        app.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://{host}:{server.server_address[1]}", stop
