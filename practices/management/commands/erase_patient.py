"""`manage.py erase_patient <patient> --request <ticket>`: GDPR erasure by pseudonymisation.

Replaces the patient's name, email and phone with a pseudonym; payments,
refunds and the audit trail are kept for RETENTION_FINANCIAL_YEARS (see
practices/privacy.py and docs/security.md). Asks for confirmation unless --yes.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.actors import Actor
from practices import privacy
from practices.management.commands.subject_access_export import find_patient


class Command(BaseCommand):
    help = "Pseudonymise one patient's personal data (right to erasure), keeping financial records."

    def add_arguments(self, parser):
        parser.add_argument(
            "patient", help="Our patient id, or the PMS patient id with --practice."
        )
        parser.add_argument("--practice", help="The practice id (needed with a PMS patient id).")
        parser.add_argument(
            "--request",
            default="",
            help="The erasure request's ticket id (letters, digits, . _ -), kept in the audit log.",
        )
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, **options):
        patient = find_patient(options["patient"], options.get("practice"))
        if not options["yes"]:
            answer = input(f"Erase the personal data of patient {patient.id}? Type 'erase': ")
            if answer.strip() != "erase":
                raise CommandError("Not erased.")
        try:
            result = privacy.patient_erase(
                patient_id=patient.id,
                actor=Actor.system("erase_patient"),
                request_reference=options["request"],
            )
        except privacy.PrivacyError as error:
            raise CommandError(error.message) from None
        if not result.changed:
            self.stdout.write(f"Patient {patient.id} was already erased; nothing changed.")
            return
        until = result.retained_until
        kept = f"until {until:%Y-%m-%d}" if until else "(there are none)"
        self.stdout.write(
            f"Erased patient {patient.id}: now '{result.patient.display_name}'. "
            f"Financial records and the audit trail are kept {kept}."
        )
