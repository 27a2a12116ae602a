"""`manage.py rotate_field_encryption`: re-encrypt every encrypted column with the newest key.

Key rotation (docs/security.md): put the new key first in FIELD_ENCRYPTION_KEYS
(keep the old ones after it), deploy, run this, then remove the old keys.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from primoro_payments import crypto


class Command(BaseCommand):
    help = "Re-encrypt every encrypted field under the newest FIELD_ENCRYPTION_KEYS key."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, **options):
        total = 0
        for model, field in crypto.encrypted_fields():
            changed = crypto.rotate_column(model, field, batch_size=options["batch_size"])
            total += changed
            self.stdout.write(f"{model._meta.label}.{field.name}: {changed} re-encrypted")
        self.stdout.write(f"Done: {total} values re-encrypted under the newest key.")
