"""`manage.py reconcile_settlements`: fetch DNA settlement batches and match them now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from integrations.dna.client import DnaError
from integrations.dna.settlement import reconcile_settlements


class Command(BaseCommand):
    help = "Fetch new DNA settlement batches and reconcile their items with our payments."

    def handle(self, *args, **options):
        try:
            stats = reconcile_settlements()
        except DnaError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"{stats.batches_new} new batch(es); {stats.matched} matched, "
            f"{stats.exceptions} exception(s), {stats.waiting} waiting."
        )
