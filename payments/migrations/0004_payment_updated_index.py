"""The (updated_at, id) index the AI Guardian feed pages by, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payments", "0003_deposits_overdue_supplier_payments"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="payment",
            index=models.Index(fields=["updated_at", "id"], name="payment_updated"),
        ),
    ]
