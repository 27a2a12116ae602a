"""`manage.py export_audit --format jsonl|csv [filters] [--output FILE|-]`.

Streams the audit log (or a filtered part of it) to a file or stdout in
constant memory, for compliance inspection.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from audit.export import (
    ExportFilterError,
    ExportFilters,
    ExportFormat,
    export_chunks,
    filtered_events,
)


class Command(BaseCommand):
    help = "Export audit events as JSON Lines or CSV, with optional filters."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=[f.value for f in ExportFormat], required=True)
        parser.add_argument(
            "--practice", action="append", default=[], metavar="UUID", help="repeatable"
        )
        parser.add_argument("--site", metavar="UUID")
        parser.add_argument(
            "--since", help="ISO 8601 date or date-time (UTC if no offset), inclusive"
        )
        parser.add_argument(
            "--until", help="ISO 8601 date or date-time, exclusive; a bare date includes that day"
        )
        parser.add_argument("--actor", metavar="KIND[:ID]", help="e.g. staff:42 or system")
        parser.add_argument(
            "--event-type", action="append", default=[], dest="event_type", help="repeatable"
        )
        parser.add_argument("--output", default="-", help="file path, or - for stdout (default)")

    def handle(self, *args, **options):
        try:
            filters = ExportFilters.parse(
                practice=options["practice"],
                site=options["site"],
                since=options["since"],
                until=options["until"],
                actor=options["actor"],
                event_type=options["event_type"],
            )
        except ExportFilterError as exc:
            raise CommandError(f"--{exc.field.replace('_', '-')}: {exc.message}") from None
        started = time.perf_counter()
        written = 0
        path = options["output"]
        target = nullcontext(sys.stdout.buffer) if path == "-" else open(path, "wb")  # noqa: SIM115
        with target as out:
            for chunk in export_chunks(filtered_events(filters), fmt=options["format"]):
                out.write(chunk)
                written += len(chunk)
            out.flush()
        elapsed = time.perf_counter() - started
        self.stderr.write(f"exported {written:,} bytes in {elapsed:.2f} s")
