"""The canonical form and hash of an event are pinned: a change here would break every stored chain."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

from audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical, chain_hash
from audit.models import EventType

EVENT = [
    uuid.UUID("8f14e45f-ceea-467f-a8f4-6c2f1a6c9b01"),
    uuid.UUID("c9f0f895-fb98-4b91-9a4d-5f5a3b1c2d03"),
    7,
    EventType.PAYMENT_REFUNDED,
    datetime.datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=datetime.UTC),
    "staff",
    "42",
    "Zoë O'Brien",
    uuid.UUID("45c48cce-2e2d-4fbd-aa1a-f0a3d1e4b507"),
    None,
    uuid.UUID("d3d94468-02a4-4b9f-8e5d-2c1f0a9b8c06"),
    "payment",
    "d3d94468-02a4-4b9f-8e5d-2c1f0a9b8c06",
    Decimal("120.5"),
    "GBP",
    "card",
    "invoice",
    "INV-1001",
    "dna-7f3a",
    "captured",
    "partially_refunded",
    "customer_request",
    "17",
    "Ana Approver",
    "",
    "req-abc",
    {"z": [1, 2.5, None, True], "a": {"nested": "é"}, "m": "=1+1"},
]


def test_canonical_bytes_are_pinned():
    assert len(EVENT) == len(HASHED_FIELDS)
    assert canonical(EVENT) == (
        b'["8f14e45f-ceea-467f-a8f4-6c2f1a6c9b01","c9f0f895-fb98-4b91-9a4d-5f5a3b1c2d03",7,'
        b'"payment.refunded","2026-03-04T05:06:07.890123+00:00","staff","42","Zo\\u00eb O\'Brien",'
        b'"45c48cce-2e2d-4fbd-aa1a-f0a3d1e4b507",null,"d3d94468-02a4-4b9f-8e5d-2c1f0a9b8c06",'
        b'"payment","d3d94468-02a4-4b9f-8e5d-2c1f0a9b8c06","120.50","GBP","card","invoice",'
        b'"INV-1001","dna-7f3a","captured","partially_refunded","customer_request","17",'
        b'"Ana Approver","","req-abc",{"a":{"nested":"\\u00e9"},"m":"=1+1","z":[1,2.5,null,true]}]'
    )
    assert chain_hash(GENESIS_HASH, EVENT) == (
        "cd59f65bb9b46d6b84fe3b3b898685c3729267b701e3c2d534afa13026256147"
    )


def test_whole_second_no_amount_empty_payload_are_pinned():
    event = list(EVENT)
    event[3] = "payment.voided"
    event[4] = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    event[13] = None
    event[26] = {}
    assert b'"2026-03-04T05:06:07+00:00"' in canonical(event)
    assert chain_hash("ab" * 32, event) == (
        "2c28e769e69e2627b9937fcb7cfa3da314b92eab7c9271562c6bfb8416459b74"
    )


def test_a_uuid_and_its_postgresql_text_hash_the_same():
    """verify reads UUID columns as text; that must be what canonical makes of a UUID."""
    as_text = [str(v) if isinstance(v, uuid.UUID) else v for v in EVENT]
    assert canonical(as_text) == canonical(EVENT)
