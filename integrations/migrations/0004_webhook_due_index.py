"""The index the webhook sweep reads due events by, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("integrations", "0003_webhook_event_backoff"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("status__in", ["received", "failed"])),
                fields=["next_attempt_at"],
                name="webhook_due",
            ),
        ),
    ]
