"""Indexes for the payments list on a large table, built without locking writes.

Sort by amount, the disputed exception and search by target or PMS invoice
reference each became an index look-up; on 1,000,000 payments they took
1-2 s before (benchmarks/bench_payments_list.py).
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payments", "0005_paymentlink"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="payment",
            index=models.Index(fields=["amount", "id"], name="payment_amount"),
        ),
        AddIndexConcurrently(
            model_name="payment",
            index=models.Index(
                condition=models.Q(("disputed", True)),
                fields=["created_at"],
                name="payment_disputed",
            ),
        ),
        AddIndexConcurrently(
            model_name="payment",
            index=models.Index(fields=["target_id"], name="payment_target_ref"),
        ),
        AddIndexConcurrently(
            model_name="payment",
            index=models.Index(
                condition=models.Q(("pms_invoice_ref", ""), _negated=True),
                fields=["pms_invoice_ref"],
                name="payment_invoice_ref",
            ),
        ),
    ]
