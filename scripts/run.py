"""`make run`: the whole system on this machine, under one supervisor.

Installs nothing (make did). It defaults DEBUG to true, makes sure PostgreSQL and
Redis are there (the embedded ones under `.local/` unless DATABASE_URL /
REDIS_URL are set), applies migrations, loads the demo data, then starts and
watches:

- web: gunicorn, the same server and config as production, on 127.0.0.1:$PORT (8000);
- worker: Celery on every queue; beat: Celery's scheduler;
- the entries of EXTRA_COMMANDS whose module exists (provider simulators).

When the web server answers /readyz it prints the URL, the demo logins and the
development secrets. Ctrl-C or SIGTERM stops every child (SIGTERM, a grace
period, then SIGKILL to its process group) and then the embedded services, if
this run started them. If any child dies, everything stops and the exit code is 1.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
QUEUES = "webhooks,outbox,writeback,default"
STOP_GRACE_SECONDS = 10
READY_TIMEOUT_SECONDS = 120

# Extra development processes: (name, module that must exist, command). An entry
# whose module is not there yet is left out at start-up, so adding a simulator
# here is one line and harmless before its code lands.
EXTRA_COMMANDS: list[tuple[str, str, list[str]]] = [
    ("simulators", "integrations.simulators", [PYTHON, "-m", "integrations.simulators"]),
]

# In a demo with no module endpoints configured, the outbox delivers to local
# stand-ins: a PMS that takes writebacks, and one signed-message sink for every
# other module (its stored messages: GET http://127.0.0.1:8095/_sink).
DEMO_PMS_PORT = 8094
DEMO_MODULES_PORT = 8095
DEMO_MODULES = (
    "COMMUNICATION_HUB",
    "TASK_MANAGER",
    "FINANCIAL_INSIGHTS",
    "REWARDS_MANAGER",
    "CARE_PLAN",
    "HYGIENE",
    "INVENTORY",
    "TELEPHONY",
)


def configure_demo_endpoints(environ) -> None:
    """Point the outbox at local stand-ins when nothing is configured (DEBUG only)."""
    if any(_configured(environ, f"MODULE_{m}_URL") for m in DEMO_MODULES) or _configured(
        environ, "PMS_WRITEBACK_URL"
    ):
        return  # the developer chose endpoints; leave them alone
    from primoro_payments.config import secret

    environ["PMS_WRITEBACK_URL"] = f"http://127.0.0.1:{DEMO_PMS_PORT}/"
    environ["PMS_WRITEBACK_SECRET"] = secret("PMS_WRITEBACK_SECRET", debug=True)
    modules_secret = secret("DEMO_MODULES_SECRET", debug=True)
    for module in DEMO_MODULES:
        environ[f"MODULE_{module}_URL"] = f"http://127.0.0.1:{DEMO_MODULES_PORT}/{module.lower()}/"
        environ[f"MODULE_{module}_SECRET"] = modules_secret
    EXTRA_COMMANDS.extend(
        [
            (
                "pms",
                "integrations.pms.simulator",
                [PYTHON, "-m", "integrations.pms.simulator", "--port", str(DEMO_PMS_PORT)],
            ),
            (
                "modules",
                "integrations.receivers",
                [
                    PYTHON,
                    "-m",
                    "integrations.receivers",
                    "--port",
                    str(DEMO_MODULES_PORT),
                    "--secret",
                    modules_secret,
                ],
            ),
        ]
    )


# Secrets the simulators sign with and the app verifies with. In development they
# are made here through the app's own mechanism (primoro_payments.config.secret,
# stored in .local/dev-secrets.json), so both sides read the same value even
# before the app has needed them. Explicit settings (NAME or NAME_FILE) win.
SIMULATOR_DEV_SECRETS = (
    "DNA_CLIENT_SECRET",
    "DNA_TERMINAL_WEBHOOK_SECRET",
    "GOCARDLESS_WEBHOOK_SECRET",
)


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived while setting up (before the children run)."""


def module_runnable(module: str) -> bool:
    """Whether `python -m module` would find something to run."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return False
    if spec is None:
        return False
    if spec.submodule_search_locations is None:
        return True
    return any((Path(p) / "__main__.py").exists() for p in spec.submodule_search_locations)


def available_extra_commands(
    commands: list[tuple[str, str, list[str]]],
) -> list[tuple[str, list[str]]]:
    return [(name, argv) for name, module, argv in commands if module_runnable(module)]


def prepare_environment(environ: dict[str, str]) -> None:
    """Development defaults for this process and every child (explicit settings win)."""
    environ.setdefault("DEBUG", "true")
    environ.setdefault("DJANGO_SETTINGS_MODULE", "primoro_payments.settings")
    environ.setdefault("PORT", "8000")
    environ.setdefault("LOG_FORMAT", "console")
    environ.setdefault("PYTHONUNBUFFERED", "1")


def prepare_metrics_dir(environ, local_dir: Path) -> Path:
    """One PROMETHEUS_MULTIPROC_DIR for web and worker, emptied: each run counts from zero.

    Only prometheus_client's own files (*.db) are removed, so a directory given
    explicitly is never wiped of anything else (docs/runbook.md, "Metrics").
    """
    path = Path(environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(local_dir / "prometheus")))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def _configured(environ, name: str) -> bool:
    return name in environ or f"{name}_FILE" in environ


def embedded_services_needed(environ) -> tuple[bool, bool]:
    """(PostgreSQL, Redis): which embedded services this run needs (no URL configured)."""
    return not _configured(environ, "DATABASE_URL"), not _configured(environ, "REDIS_URL")


def embedded_services_owned(environ) -> bool:
    """Whether this run will own the embedded services it starts, and so stop them at the end.

    Only when it needs one and none is up yet: `stop_all()` stops both, and one
    already running belongs to someone else (another run, the test suite).
    """
    if not any(embedded_services_needed(environ)):
        return False
    from primoro_payments import localservices

    return not any(localservices.running().values())


def start_embedded_services(environ) -> None:
    """Start the embedded services this run needs and export their URLs.

    Exporting them means the children do not each race to start the services.
    """
    need_db, need_redis = embedded_services_needed(environ)
    if not (need_db or need_redis):
        return
    from primoro_payments import localservices

    if need_db:
        print(f"Starting the embedded PostgreSQL (data in {localservices.PG_DIR}) ...", flush=True)
        environ["DATABASE_URL"] = localservices.postgres_url()
    if need_redis:
        print(f"Starting the embedded Redis on port {localservices.REDIS_PORT} ...", flush=True)
        environ["REDIS_URL"] = localservices.redis_url()


def stop_embedded_services() -> None:
    from primoro_payments import localservices

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its INFO lines are pg_ctl transcripts
    print("Stopping the embedded PostgreSQL and Redis ...", flush=True)
    localservices.stop_all()


def _set_parent_death_signal() -> None:
    """Children get SIGTERM if the supervisor itself is killed (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    buffer: bytes = field(default=b"", repr=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own fixed commands
            self.argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we decide when it stops
            preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int, *, group: bool = False) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self.proc.pid, signum)
            elif self.proc.poll() is None:
                self.proc.send_signal(signum)


class Supervisor:
    def __init__(self, children: list[Child], port: int):
        self.children = children
        self.port = port
        self.width = max(len(child.name) for child in children)
        self.selector = selectors.DefaultSelector()
        self.signals_received = 0

    # -- output ------------------------------------------------------------

    def _emit(self, child: Child, line: bytes) -> None:
        prefix = f"{child.name:<{self.width}} | ".encode()
        sys.stdout.buffer.write(prefix + line.rstrip(b"\r\n") + b"\n")

    def pump(self, timeout: float) -> None:
        """Copy the children's output to ours, each line prefixed with its process name."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            chunk = os.read(key.fd, 65536)
            if not chunk:
                self.selector.unregister(key.fd)
                if child.buffer:
                    self._emit(child, child.buffer)
                    child.buffer = b""
                continue
            *lines, child.buffer = (child.buffer + chunk).split(b"\n")
            for line in lines:
                self._emit(child, line)
        sys.stdout.flush()

    # -- lifecycle ---------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        self.signals_received += 1

    def start(self) -> None:
        for child in self.children:
            child.start()
            self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)
            print(f"started {child.name} pid={child.proc.pid}: {' '.join(child.argv[1:])}")
        sys.stdout.flush()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/readyz", timeout=2
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def run(self, on_ready) -> int:
        """Watch the children until a signal (exit 0) or a child's death (exit 1)."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self.start()
        except OSError as error:
            print(f"Could not start a process: {error}", flush=True)
            self.stop()
            return 1
        started = time.monotonic()
        next_ready_check = started + 1
        announced = warned = False
        exit_code = 0
        while True:
            self.pump(0.2)
            if self.signals_received:
                print("\nStopping (signal received) ...", flush=True)
                break
            dead = [child for child in self.children if not child.running]
            if dead:
                for child in dead:
                    print(
                        f"\n{child.name} exited with code {child.proc.returncode}; "
                        "stopping everything.",
                        flush=True,
                    )
                exit_code = 1
                break
            now = time.monotonic()
            if not announced and now >= next_ready_check:
                next_ready_check = now + 1
                if self.ready():
                    announced = True
                    on_ready()
                elif now - started > READY_TIMEOUT_SECONDS and not warned:
                    warned = True
                    print(
                        f"web has not answered /readyz with 200 after {READY_TIMEOUT_SECONDS} s; "
                        "still waiting.",
                        flush=True,
                    )
        self.stop()
        return exit_code

    def stop(self) -> None:
        """SIGTERM to each child, a grace period, then SIGKILL to whatever is left."""
        already = self.signals_received
        for child in self.children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(child.running for child in self.children):
            if time.monotonic() > deadline or self.signals_received > already:
                for child in self.children:
                    if child.running:
                        print(f"{child.name} did not stop in time; killing it.", flush=True)
                break
            self.pump(0.1)
        for child in self.children:
            child.signal(signal.SIGKILL, group=True)  # the child and anything it left behind
            if child.proc is not None:
                child.proc.wait()
        with contextlib.suppress(OSError, ValueError):
            self.pump(0)
        self.selector.close()


def _print_banner(port: int, environ) -> None:
    from practices.management.commands.load_demo import format_logins, format_patient_token
    from primoro_payments.config import dev_secrets

    debug = _is_debug(environ)
    base = f"http://127.0.0.1:{port}"
    lines = [
        "",
        "=" * 72,
        f"Primoro Integrated Payments is running{' (DEBUG)' if debug else ''}",
        f"  Staff portal   {base}/",
        f"  Sign in        {base}/accounts/login/",
        f"  Django admin   {base}/admin/",
        f"  Probes         {base}/healthz  {base}/readyz",
        f"  API docs       {base}/api/docs/  (schema {base}/api/schema/)",
        "",
    ]
    if debug:
        lines.append(format_logins())
        lines += ["", format_patient_token()]
        secrets = dev_secrets()
        if secrets:
            lines += ["", "Development secrets (.local/dev-secrets.json; never use in production):"]
            lines += [f"  {name} = {value}" for name, value in sorted(secrets.items())]
    lines += ["", "Press Ctrl-C to stop everything.", "=" * 72, ""]
    print("\n".join(lines), flush=True)


def _is_debug(environ) -> bool:
    return environ.get("DEBUG", "").strip().lower() in {"true", "on", "ok", "y", "yes", "1"}


def _port_in_use(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _manage(*args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, check=True)  # noqa: S603


def build_children(port: int, local_dir: Path) -> list[Child]:
    children = [
        Child(
            "web",
            [
                *(PYTHON, "-m", "gunicorn", "primoro_payments.wsgi"),
                *("--config", "python:primoro_payments.gunicorn_conf"),
                *("--bind", f"127.0.0.1:{port}", "--workers", "2"),
                *("--graceful-timeout", "5", "--timeout", "60"),
                "--no-control-socket",  # several servers may share this machine's home dir
            ],
        ),
        Child(
            "worker",
            [
                *(PYTHON, "-m", "celery", "-A", "primoro_payments", "worker"),
                *("-Q", QUEUES, "--concurrency", "2", "--loglevel", "INFO"),
            ],
        ),
        Child(
            "beat",
            [
                *(PYTHON, "-m", "celery", "-A", "primoro_payments", "beat"),
                *("--schedule", str(local_dir / "celerybeat-schedule"), "--loglevel", "INFO"),
            ],
        ),
    ]
    children += [Child(name, argv) for name, argv in available_extra_commands(EXTRA_COMMANDS)]
    return children


def main() -> int:
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    environ = os.environ
    prepare_environment(environ)
    port = int(environ["PORT"])
    if _port_in_use(port):
        print(f"Port {port} is already in use; set PORT to another one.", file=sys.stderr)
        return 1

    def _raise_stop(_signum, _frame):
        raise StopRequested

    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    started_services = False
    try:
        if not _is_debug(environ) and not (
            _configured(environ, "DATABASE_URL") and _configured(environ, "REDIS_URL")
        ):
            print("DEBUG is off: set DATABASE_URL and REDIS_URL.", file=sys.stderr)
            return 1
        started_services = embedded_services_owned(environ)  # decided before starting
        start_embedded_services(environ)
        _manage("migrate", "--noinput")
        if _is_debug(environ):
            _manage("load_demo", "--verbosity", "0")

        import django

        django.setup()
        from practices.management.commands.load_demo import terminal_plan
        from primoro_payments import localservices

        if _is_debug(environ):
            from primoro_payments.config import secret

            for name in SIMULATOR_DEV_SECRETS:
                secret(name, debug=True)
            configure_demo_endpoints(environ)
            # The DNA simulator's index page lists the demo terminals.
            environ.setdefault("DNA_SIM_TERMINALS", ",".join(row[-1] for row in terminal_plan()))

        local_dir = localservices.LOCAL_DIR
        local_dir.mkdir(parents=True, exist_ok=True)
        prepare_metrics_dir(environ, local_dir)
        supervisor = Supervisor(build_children(port, local_dir), port)
        return supervisor.run(on_ready=lambda: _print_banner(port, environ))
    except StopRequested:
        print("\nStopped during start-up.", flush=True)
        return 0
    except subprocess.CalledProcessError as error:
        print(f"\n{' '.join(error.cmd[1:])} failed with code {error.returncode}.", flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if started_services:
            stop_embedded_services()


if __name__ == "__main__":
    sys.exit(main())
