"""Celery entry points for DNA: thin wrappers that take ids and call the integration's code.

- `execute_provider_operation(op_id)`: queued after the commit that created a
  ProviderOperation (payments.services._provider_operation), runs one attempt.
- `janitor()`: beat, every DNA_JANITOR_SECONDS: pending operations and payments
  whose outcome is not known yet (integrations.dna.janitor).
- `resolve_payment(payment_id)`: ask DNA about one payment now (e.g. the patient
  came back from the hosted page before the callback was processed).
- `reconcile_settlements()`: beat, and `manage.py reconcile_settlements`.
"""

from __future__ import annotations

import structlog
from celery import shared_task

log = structlog.get_logger("integrations.dna.tasks")


@shared_task(name="integrations.dna.tasks.execute_provider_operation", ignore_result=True)
def execute_provider_operation(op_id: int) -> str:
    from integrations.dna.operations import execute

    return execute(op_id)


@shared_task(name="integrations.dna.tasks.janitor", ignore_result=True)
def janitor() -> dict:
    from integrations.dna.janitor import run

    return run().as_dict()


@shared_task(name="integrations.dna.tasks.resolve_payment", ignore_result=True)
def resolve_payment(payment_id: str) -> str:
    from integrations.dna.client import DnaClient
    from integrations.dna.janitor import resolve_payment as resolve
    from payments.models import Payment

    payment = Payment.objects.filter(pk=payment_id).first()
    if payment is None:
        return "missing"
    with DnaClient() as dna:
        applied = resolve(payment, client=dna)
    return applied.note if applied else "unchanged"


@shared_task(name="integrations.dna.tasks.reconcile_settlements", ignore_result=True)
def reconcile_settlements() -> dict:
    from integrations.dna.client import DnaError
    from integrations.dna.settlement import reconcile_settlements as reconcile

    try:
        return reconcile().as_dict()
    except DnaError as error:
        log.warning("dna_reconciliation_failed", error=error.message)
        return {"error": error.message}
