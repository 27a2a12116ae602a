"""Shared plumbing for benchmarks: a throwaway database of their own, and printing figures.

Benchmarks never touch real data: each works in a database named after the
configured one plus a suffix, created fresh and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from urllib.parse import quote

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "primoro_payments.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

import psycopg  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402


def conninfo(name: str) -> dict:
    """psycopg connection keywords for database `name` on the configured server."""
    base = connection.settings_dict
    info = {
        "dbname": name,
        "user": base.get("USER") or None,
        "password": base.get("PASSWORD") or None,
        "host": base.get("HOST") or None,
        "port": base.get("PORT") or None,
    }
    return {k: v for k, v in info.items() if v is not None}


def database_url(name: str) -> str:
    base = connection.settings_dict
    auth = quote(base.get("USER") or "", safe="")
    if base.get("PASSWORD"):
        auth += ":" + quote(base["PASSWORD"], safe="")
    host = quote(base.get("HOST") or "", safe="")
    port = f":{base['PORT']}" if base.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{name}"


def recreate_database(name: str) -> None:
    with psycopg.connect(**conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(**conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def bench_database(
    suffix: str, *, migrate: bool = True, keep: bool = False, reuse: bool = False
) -> Iterator[str]:
    """Point Django at a fresh `<configured>_<suffix>` database for the block; drop it after."""
    configured = connection.settings_dict["NAME"]
    name = f"{configured}_{suffix}"
    connections.close_all()
    try:
        if not reuse:
            recreate_database(name)
        connection.settings_dict["NAME"] = name
        if migrate and not reuse:
            call_command("migrate", verbosity=0, interactive=False)
        yield name
    finally:
        connections.close_all()
        connection.settings_dict["NAME"] = configured
        if not keep:
            drop_database(name)


def pgbench_tps(
    *, clients: int = 8, threads: int = 2, seconds: int = 15, scale: int = 10
) -> float | None:
    """The machine's baseline: pgbench TPC-B-like tps in a scratch database (None if no pgbench)."""
    name = f"{connection.settings_dict['NAME']}_pgbench"
    info = conninfo(name)
    args = []
    if "host" in info:
        args += ["-h", info["host"]]
    if "port" in info:
        args += ["-p", str(info["port"])]
    if "user" in info:
        args += ["-U", info["user"]]
    env = {**os.environ, "PGPASSWORD": info.get("password", "")}
    recreate_database(name)
    try:
        subprocess.run(
            ["pgbench", *args, "-i", "-q", "-s", str(scale), name],
            check=True,
            env=env,
            capture_output=True,
        )
        run = subprocess.run(
            [
                "pgbench",
                *args,
                "-n",
                "-c",
                str(clients),
                "-j",
                str(threads),
                "-T",
                str(seconds),
                name,
            ],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        return None
    finally:
        drop_database(name)
    match = re.search(r"tps = ([0-9.]+)", run.stdout)
    return float(match.group(1)) if match else None


def print_table(
    rows: list[tuple], headers: tuple = ("measure", "figure", "baseline", "ratio / target")
) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)), flush=True)
