"""PMS writeback (§6.3): adapters, the writeback outcome service and a PMS simulator.

The PMS is the record of invoices; we are the record of payment execution. We
write outcomes back against the invoice the PMS presented and never create or
modify a PMS invoice. A writeback that cannot happen becomes a fallback task.
"""
