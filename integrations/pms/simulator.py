"""A PMS writeback simulator speaking the reference adapter's HTTP contract.

It verifies the signature, records each writeback once by event id (a repeat
is answered 200 "duplicate" and not recorded again) and answers 201 with a PMS
payment reference. Modes: "ok"; "down" (503, as a PMS in maintenance);
"unsupported" (501, a PMS without writeback); "reject" (422); "drop" (no
answer). It only records payments against invoice references, as a real PMS
integration would; there is no invoice to create or change.

In tests: `sim = serve_in_thread(port=0, secret=...)`, then `url, stop = sim`
or use `sim.writebacks`, `sim.mode`. Locally: `python -m integrations.pms.simulator`
(reads PMS_WRITEBACK_SECRET from the environment or the development secrets).
Control over HTTP: `POST /_sink/mode {"mode": "down"}`, `GET /_sink`.
"""

from __future__ import annotations

import argparse
import itertools
import threading
from collections.abc import Iterator

from integrations.receivers import MessageSink, Received

MODES = ("ok", "down", "unsupported", "reject", "drop")


class PmsSimulator(MessageSink):
    def __init__(self, *, secret: str | None = None, mode: str = "ok"):
        super().__init__(secret=secret, name="pms-simulator")
        self.mode = mode
        self._refs = itertools.count(1)

    def fault(self) -> tuple[int, dict] | None:
        if self.mode == "unsupported":
            return 501, {"error": "writeback_not_supported"}
        if self.mode == "reject":
            return 422, {"error": "unknown_invoice"}
        return super().fault()

    def accept(self, received: Received) -> tuple[int, dict]:
        writeback = received.document.get("writeback") or {}
        if writeback.get("kind") not in ("paid", "pending", "refund"):
            return 422, {"error": "unknown_writeback_kind"}
        return 201, {
            "status": "recorded",
            "event_id": received.event_id,
            "pms_payment_ref": f"PMSPAY-{next(self._refs):06d}",
        }

    @property
    def writebacks(self) -> list[dict]:
        """The recorded writeback documents, first-seen order."""
        return [r.document for r in self.stored.values()]

    def __iter__(self) -> Iterator:
        """`url, stop = serve_in_thread()`."""
        return iter((self.url, self.stop))


def serve_in_thread(
    port: int = 0, *, host: str = "127.0.0.1", mode: str = "ok", secret: str | None = None
) -> PmsSimulator:
    """Start the simulator in a background thread; returns it (unpacks as `url, stop`)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    simulator = PmsSimulator(secret=secret, mode=mode)
    simulator.start(port=port, host=host)
    return simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="PMS writeback simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8094)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument(
        "--no-verify", action="store_true", help="accept unsigned writebacks (debugging only)"
    )
    args = parser.parse_args(argv)
    secret = None
    if not args.no_verify:
        from primoro_payments.config import DEV_SECRETS_FILE, dev_secrets, env

        secret = env.str("PMS_WRITEBACK_SECRET", default="") or dev_secrets().get(
            "PMS_WRITEBACK_SECRET"
        )
        if not secret:
            raise SystemExit(
                "Set PMS_WRITEBACK_SECRET (or run the app once in DEBUG so "
                f"{DEV_SECRETS_FILE} holds it), or pass --no-verify."
            )
    simulator = serve_in_thread(args.port, host=args.host, mode=args.mode, secret=secret)
    print(f"PMS simulator on {simulator.url} mode={simulator.mode}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        simulator.stop()


if __name__ == "__main__":
    main()
