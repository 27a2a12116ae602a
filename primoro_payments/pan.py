"""Card-number (PAN) detection: the one rule behind log redaction and the PAN guard.

A card number is a Luhn-valid run of 13 to 19 digits, written plainly or in
groups separated by single spaces or dashes. We never keep such a value, so
anything that finds one either refuses the input or replaces the digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# 13-19 digits, each optionally followed by one space or dash, not touching
# another digit on either side.
_CANDIDATE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
# Identifiers that are not card numbers even when a digit run inside them looks
# like one: a UUID whose dash-separated groups happen to be all digits (about 1
# in 450 random UUIDs), and a hex string of 32 or more characters (a digest, a
# uuid4().hex request id or idempotency key: about 1 in 500 would otherwise
# look like one, and be refused or mangled in the logs).
_IDENTIFIER = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{32,}"
)
REDACTED = "[REDACTED-PAN]"


def _in_identifier(match: re.Match, text: str) -> bool:
    return any(
        start < match.end() and match.start() < end
        for start, end in (found.span() for found in _IDENTIFIER.finditer(text))
    )


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_like(match: str) -> bool:
    digits = match.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def iter_card_numbers(text: str) -> Iterator[str]:
    """Yield each card-number-like run in `text` (as written, separators kept)."""
    for match in _CANDIDATE.finditer(text):
        if _card_like(match.group()) and not _in_identifier(match, text):
            yield match.group()


def contains_card_number(text: str) -> bool:
    return next(iter_card_numbers(text), None) is not None


def redact_card_numbers(text: str) -> str:
    """Replace every card-number-like run with a fixed marker."""
    if _CANDIDATE.search(text) is None:  # the common case, decided in C: nothing to replace
        return text
    return _CANDIDATE.sub(
        lambda m: REDACTED if _card_like(m.group()) and not _in_identifier(m, text) else m.group(),
        text,
    )


def redact_value(value):
    """Redact card numbers anywhere inside strings, lists, tuples and dicts."""
    if isinstance(value, str):
        return redact_card_numbers(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10**12:
        text = str(value)
        return REDACTED if _card_like(text) else value
    return value
