"""The index the portal's communications log pages by, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("integrations", "0004_webhook_due_index"),
        ("practices", "0004_encrypt_patient_contact"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("destination", "communication_hub")),
                fields=["practice", "-created_at", "-id"],
                name="outbox_comms_time",
            ),
        ),
    ]
