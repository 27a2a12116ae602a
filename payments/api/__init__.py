"""The patient and tablet REST API (spec §4.2, §5.2, §5.3), documented at /api/schema/.

An app of its own (label `payments_api`) only because it keeps two tables of
its own: Idempotency-Key records and staff API tokens. Views translate HTTP to
calls of `payments.flows`, `payments.links`, `payments.balances` and
`payments.selectors`; the domain never imports from here (the public /pay/
pages reuse `throttling`, the API's rate limits).
"""
