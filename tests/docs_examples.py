"""The JSON examples of docs/contracts.md, read from the page: one source for docs and tests.

Inbound examples are the request bodies under each `### <Module>: <event>` heading
(a body that names ids uses the placeholders below, which a test replaces with
real ids). Outbound examples are the payloads under each `#### ...` heading of
"Payload examples", keyed like `integrations.catalog.OutboundEvent.key`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"

_JSON_BLOCK = re.compile(r"```jsonc?\n(.*?)\n```", re.S)
_INBOUND = re.compile(r"^<!-- inbound: (?P<module>\w+)/(?P<event>\w+) -->$", re.M)
_OUTBOUND = re.compile(
    r"^#### `(?P<event>[^`]+)`(?: \(`(?P<task>[^`]+)`\))? → (?P<dests>.+)$", re.M
)


def _text() -> str:
    return CONTRACTS.read_text()


def _json_after(text: str, position: int) -> dict:
    block = _JSON_BLOCK.search(text, position)
    assert block is not None, f"no JSON example after offset {position} in {CONTRACTS}"
    return json.loads(block.group(1))


def inbound_examples() -> dict[tuple[str, str], dict]:
    """(module, event_type) → the example request body shown in the docs."""
    text = _text()
    return {(m["module"], m["event"]): _json_after(text, m.end()) for m in _INBOUND.finditer(text)}


def outbound_examples() -> dict[str, dict]:
    """`<destination>:<event type>[:<task type>]` → the example payload shown in the docs."""
    text = _text()
    start = text.index("### Payload examples")
    end = text.index("\n## ", start)
    examples = {}
    for m in _OUTBOUND.finditer(text, start, end):
        payload = _json_after(text, m.end())
        for destination in re.findall(r"`(\w+)`", m["dests"]):
            key = f"{destination}:{m['event']}" + (f":{m['task']}" if m["task"] else "")
            examples[key] = payload
    return examples


def same_shape(actual, documented, path: str = "payload") -> list[str]:
    """Where the real payload's keys differ from the documented ones (objects compared deeply)."""
    if not (isinstance(actual, dict) and isinstance(documented, dict)):
        return []
    problems = []
    if set(actual) != set(documented):
        missing = sorted(set(actual) - set(documented))
        extra = sorted(set(documented) - set(actual))
        problems.append(f"{path}: undocumented {missing}, documented but not sent {extra}")
    for key in set(actual) & set(documented):
        problems += same_shape(actual[key], documented[key], f"{path}.{key}")
    return problems
