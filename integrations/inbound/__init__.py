"""Inbound trigger contracts: other platform modules asking us to act (§4.6, §6.1).

`POST /api/v1/inbound/<module>/<event_type>/`, signed by the calling module
with its own secret (`integrations.signing`, docs/contracts.md). Each accepted
event is stored once (`InboundEvent`, unique per module and event id) in the
same transaction as its effect, so a redelivery gets the first answer and
nothing is done twice. A Django app of its own (label `inbound`) so that its
tables migrate independently of the outbox and webhook tables.
"""
