"""`manage.py subject_access_export <patient>`: one patient's payment data as JSON (GDPR SAR).

<patient> is our patient id, or `--practice <id>` with the PMS patient id. The
document goes to stdout or `--output FILE`; the export is audited.
"""

from __future__ import annotations

import json
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from audit.actors import Actor
from practices import privacy
from practices.models import Patient


def find_patient(reference: str, practice_id: str | None) -> Patient:
    """By our id, or by the PMS patient id within a practice."""
    patients = Patient.objects.all()
    if practice_id:
        patients = patients.filter(practice_id=practice_id)
    try:
        found = patients.filter(pk=uuid.UUID(reference)).first()
    except ValueError:
        found = None
    if found is None and practice_id:
        found = patients.filter(pms_patient_id=reference).first()
    if found is None:
        raise CommandError("No such patient (give our patient id, or --practice and the PMS id).")
    return found


class Command(BaseCommand):
    help = "Export everything held about one patient (subject access request) as JSON."

    def add_arguments(self, parser):
        parser.add_argument(
            "patient", help="Our patient id, or the PMS patient id with --practice."
        )
        parser.add_argument("--practice", help="The practice id (needed with a PMS patient id).")
        parser.add_argument("--output", help="Write the JSON here instead of stdout.")

    def handle(self, *args, **options):
        patient = find_patient(options["patient"], options.get("practice"))
        try:
            document = privacy.subject_access_export(
                patient_id=patient.id, actor=Actor.system("subject_access_export")
            )
        except privacy.PrivacyError as error:
            raise CommandError(error.message) from None
        text = json.dumps(document, cls=DjangoJSONEncoder, indent=2, sort_keys=True)
        if options.get("output"):
            with open(options["output"], "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            self.stderr.write(f"Wrote the export of patient {patient.id} to {options['output']}.")
        else:
            self.stdout.write(text)
