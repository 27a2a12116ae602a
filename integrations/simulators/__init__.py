"""Provider simulators, so the whole product runs end to end on one machine.

`python -m integrations.simulators` starts the DNA Payments simulator (port
8601: OAuth, hosted checkout, Pay by Link, transactions, axept terminals,
settlement) and the read-only GoCardless API simulator (port 8602) in one
process; `python -m integrations.simulators.gocardless send <scenario>` sends
GoCardless webhooks. They speak the contracts in PROVIDERS.md, so our clients,
pointed at the real hosts, work unchanged. Details in dna.py and gocardless.py;
the signatures in signing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def serve_in_thread(
    port: int = 0, *, provider: str = "dna", **options: Any
) -> tuple[str, Callable[[], None]]:
    """Run one simulator in this process on a thread; returns (base_url, stop).

    provider is "dna" (options: config=DnaConfig) or "gocardless" (options:
    access_token). port 0 picks a free port, which is what pytest fixtures want.
    """
    if provider == "dna":
        from integrations.simulators import dna

        return dna.serve_in_thread(port, **options)
    if provider == "gocardless":
        from integrations.simulators import gocardless

        return gocardless.serve_in_thread(port, **options)
    raise ValueError(f"unknown provider {provider!r}: dna or gocardless")
