"""`python -m integrations.simulators`: the DNA and GoCardless simulators in one process.

Ports come from DNA_SIM_PORT (8601) and GOCARDLESS_SIM_PORT (8602), the host
from SIM_HOST (127.0.0.1); 0 picks a free port and the URLs printed say which.
Ctrl-C or SIGTERM stops both servers and exits 0. A missing secret exits 2
with a message saying where to set it; a port already taken exits 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from integrations.simulators import base, gocardless
from integrations.simulators.config import SimulatorConfigError, env_int, env_str, optional_secret


def run_until_signal(
    apps: list[base.SimulatorApp], ports: dict[str, int], *, host: str, verbose: bool = False
) -> int:
    """Serve every app on its port until SIGINT/SIGTERM; print each URL once listening."""
    stop = threading.Event()
    servers: list[tuple[base.SimulatorApp, base.SimulatorServer]] = []
    try:
        for app in apps:
            app.verbose = verbose
            servers.append((app, base.make_server(app, host=host, port=ports[app.name])))
    except OSError as error:
        print(f"Cannot listen on {host}: {error}", file=sys.stderr, flush=True)
        for _, server in servers:
            server.server_close()
        return 1
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = []
    for app, server in servers:
        thread = threading.Thread(target=server.serve_forever, name=app.name, daemon=True)
        thread.start()
        threads.append(thread)
        print(
            f"{app.name} simulator listening on http://{host}:{server.server_address[1]}",
            flush=True,
        )
    _print_hints(servers)
    stop.wait()
    print("Stopping the simulators ...", flush=True)
    for app, server in servers:
        app.stopping.set()
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(timeout=5)
    return 0


def _print_hints(servers: list[tuple[base.SimulatorApp, base.SimulatorServer]]) -> None:
    from integrations.simulators.dna import DnaSimulator

    lines = []
    for app, _ in servers:
        if isinstance(app, DnaSimulator):
            lines.append(f"  DNA_OAUTH_URL = DNA_API_URL = DNA_PAY_URL = {app.base_url}")
            lines.append(f"  demo index {app.base_url}/")
            lines += [
                f"  terminal   {app.base_url}/axept/terminals/{t}" for t in app.config.terminals
            ]
        else:
            lines.append(f"  GoCardless API base URL {app.base_url}")
            lines.append(
                "  send a webhook: python -m integrations.simulators.gocardless send "
                f"payment_failed --url {gocardless.DEFAULT_WEBHOOK_URL}"
            )
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    from integrations.simulators.dna import DEFAULT_PORT as DNA_PORT
    from integrations.simulators.dna import DnaConfig, DnaSimulator
    from integrations.simulators.gocardless import DEFAULT_PORT as GC_PORT
    from integrations.simulators.gocardless import GoCardlessSimulator

    parser = argparse.ArgumentParser(prog="python -m integrations.simulators")
    parser.add_argument("--host", default=env_str("SIM_HOST", "127.0.0.1"))
    parser.add_argument("--dna-port", type=int, default=None)
    parser.add_argument("--gocardless-port", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each request")
    args = parser.parse_args(argv)
    try:
        dna_port = args.dna_port if args.dna_port is not None else env_int("DNA_SIM_PORT", DNA_PORT)
        gc_port = (
            args.gocardless_port
            if args.gocardless_port is not None
            else env_int("GOCARDLESS_SIM_PORT", GC_PORT)
        )
        dna = DnaSimulator(DnaConfig.from_env())
        gocardless = GoCardlessSimulator(access_token=optional_secret("GOCARDLESS_ACCESS_TOKEN"))
    except SimulatorConfigError as error:
        print(f"Simulators not started: {error}", file=sys.stderr, flush=True)
        return 2
    return run_until_signal(
        [dna, gocardless],
        {dna.name: dna_port, gocardless.name: gc_port},
        host=args.host,
        verbose=args.verbose,
    )


if __name__ == "__main__":
    sys.exit(main())
