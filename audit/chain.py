"""The canonical content of an audit event and its chained hash.

One function decides what is hashed, used both when an event is written and
when a chain is verified, so the two can never disagree.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

GENESIS_HASH = "0" * 64

# The hashed fields, in a fixed order. Adding a field means a new chain
# version; never reorder.
HASHED_FIELDS = (
    "event_id",
    "practice_id",
    "seq",
    "event_type",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "actor_label",
    "site_id",
    "terminal_id",
    "payment_id",
    "subject_type",
    "subject_id",
    "amount",
    "currency",
    "method",
    "target_type",
    "target_id",
    "provider_reference",
    "from_state",
    "to_state",
    "reason_code",
    "approver_id",
    "approver_label",
    "mandate_reference",
    "request_id",
    "payload",
)


def _plain(value):
    if value is None or isinstance(value, str | int | bool | dict | list):
        return value
    if isinstance(value, Decimal):
        return format(value.quantize(Decimal("0.01")), "f")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)  # UUIDs


# The same bytes as json.dumps(..., sort_keys=True, separators=(",", ":"),
# ensure_ascii=True), without building an encoder per call; and the exact types
# `_plain` returns unchanged skip the call. verify_audit hashes every row, so
# this is its hot loop (tests/audit/test_chain.py pins the output).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
_AS_IS = frozenset({str, int, bool, dict, list, type(None)})


def canonical(values) -> bytes:
    """`values` is a sequence in HASHED_FIELDS order."""
    return _ENCODE([v if type(v) in _AS_IS else _plain(v) for v in values]).encode()


def chain_hash(prev_hash: str, values) -> str:
    digest = hashlib.sha256(prev_hash.encode())
    digest.update(canonical(values))
    return digest.hexdigest()
