"""The janitor's queue (DNA payments whose outcome is unknown), built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payments", "0007_payment_next_check"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="payment",
            index=models.Index(
                condition=models.Q(
                    ("provider", "dna"),
                    ("state__in", ["initiated", "awaiting_customer_action", "authorised"]),
                ),
                fields=["next_check_at", "updated_at"],
                name="payment_janitor_due",
            ),
        ),
    ]
