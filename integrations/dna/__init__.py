"""DNA Payments: card acquiring (hosted checkout, Pay by Link, transactions, axept terminals).

`client.py` speaks DNA's HTTP contracts and returns the dataclasses of
`types.py`, so nothing outside this package reads DNA JSON. `webhooks.py`
verifies and stores DNA's callbacks and terminal results, `handlers.py` applies
them through `payments.services`, `tasks.py` runs provider operations and the
janitor, and `settlement.py` reconciles payout batches. docs/providers.md is the
engineer's guide.
"""
