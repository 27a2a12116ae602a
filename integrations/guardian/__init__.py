"""The AI Guardian interface (§7): read-only lifecycle state signals, no card data by construction.

`GET /api/v1/guardian/signals/` with the Guardian's own bearer token. Signals
are built field by field from an allow-list (`signals.SIGNAL_FIELDS`), never
from a model's fields, so a column added later cannot leak into them.
Sources are registered explicitly (`signals.register_signal_source`): the
payment sources here, and any other app's (subscriptions) from its
AppConfig.ready().
"""
