"""Find a transaction in any batch (is it settled twice?), built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("dna", "0003_settlement_duplicate_problems"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="settlementitem",
            index=models.Index(fields=["transaction_id"], name="settlement_item_txn"),
        ),
    ]
