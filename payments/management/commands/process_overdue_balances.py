"""Run one overdue-balance pass now (what the hourly beat job does), e.g. from cron or by hand."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from payments.overdue import overdue_process


class Command(BaseCommand):
    help = "Start due instalments, open overdue balances, send due reminders, raise final tasks."

    def add_arguments(self, parser):
        parser.add_argument(
            "--now",
            help="Act as if it were this time (ISO 8601 with offset), e.g. to catch up after downtime.",
        )

    def handle(self, *args, now=None, **options):
        at = None
        if now:
            at = parse_datetime(now)
            if at is None or at.tzinfo is None:
                raise CommandError("--now must be an ISO 8601 time with its UTC offset.")
        stats = overdue_process(now=at)
        self.stdout.write(json.dumps(stats.as_dict(), sort_keys=True))
