"""`manage.py verify_audit [--practice UUID ...] [--workers N]`: walk the audit hash chains.

Prints one line per practice and the overall rate, and fails (non-zero exit,
CommandError) if any chain is broken, naming the practice, the seq and event id
of the first broken link, and the reason.
"""

from __future__ import annotations

import os
import time
import uuid

from django.core.management.base import BaseCommand, CommandError

from audit.verify import verify_all


class Command(BaseCommand):
    help = "Verify the audit log's hash chains; exits non-zero at the first broken link."

    def add_arguments(self, parser):
        parser.add_argument(
            "--practice",
            action="append",
            default=[],
            metavar="UUID",
            help="Verify only this practice (repeatable). Default: every practice.",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=os.cpu_count() or 1,
            help="Worker processes hashing in parallel (default: one per CPU; 1 = in process).",
        )

    def handle(self, *args, **options):
        try:
            practice_ids = [uuid.UUID(p) for p in options["practice"]] or None
        except ValueError as exc:
            raise CommandError(f"--practice must be a UUID: {exc}") from None
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        started = time.perf_counter()
        results = verify_all(practice_ids, workers=options["workers"])
        elapsed = time.perf_counter() - started
        for result in results:
            state = "OK" if result.ok else f"BROKEN at seq {result.broken_seq} ({result.reason})"
            self.stdout.write(
                f"practice {result.practice_id}: {state}, {result.events_checked} events verified"
            )
        total = sum(result.events_checked for result in results)
        rate = f"{total / elapsed:,.0f}" if elapsed > 0 else "-"
        summary = f"{len(results)} chains, {total} events in {elapsed:.2f} s ({rate} events/s)"
        broken = next((result for result in results if not result.ok), None)
        if broken:
            self.stdout.write(summary)
            raise CommandError(
                f"practice {broken.practice_id}: chain broken at seq {broken.broken_seq} "
                f"(event {broken.event_id or 'none: missing'}): {broken.reason}: {broken.detail}"
            )
        self.stdout.write(self.style.SUCCESS(f"All chains OK: {summary}"))
