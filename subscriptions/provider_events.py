"""A GoCardless webhook event as a typed value (parsed once, so services never read raw JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class MalformedEvent(ValueError):
    """The event lacks what every GoCardless event has (id, created_at, action, resource_type)."""


@dataclass(frozen=True)
class GoCardlessEvent:
    id: str
    created_at: datetime
    resource_type: str
    action: str
    links: dict[str, str] = field(default_factory=dict)
    cause: str = ""
    origin: str = ""
    reason_code: str = ""
    description: str = ""
    will_attempt_retry: bool | None = None

    @property
    def kind(self) -> str:
        return f"{self.resource_type}.{self.action}"

    def link(self, name: str) -> str:
        return self.links.get(name, "")

    def details(self) -> dict[str, Any]:
        """What we keep of `details` in audit and outbound payloads (no personal data in it)."""
        return {
            "origin": self.origin or None,
            "cause": self.cause or None,
            "reason_code": self.reason_code or None,
            "description": self.description or None,
            "will_attempt_retry": self.will_attempt_retry,
        }

    @classmethod
    def parse(cls, body: Any) -> GoCardlessEvent:
        if not isinstance(body, dict):
            raise MalformedEvent("An event must be a JSON object.")
        event_id, action, resource_type = (
            body.get("id"),
            body.get("action"),
            body.get("resource_type"),
        )
        if not all(isinstance(v, str) and v for v in (event_id, action, resource_type)):
            raise MalformedEvent("An event needs id, action and resource_type.")
        created_at = parse_created_at(body.get("created_at"))
        links = body.get("links") if isinstance(body.get("links"), dict) else {}
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        retry = details.get("will_attempt_retry")
        return cls(
            id=event_id,
            created_at=created_at,
            resource_type=resource_type,
            action=action,
            links={str(k): str(v) for k, v in links.items() if isinstance(v, str)},
            cause=str(details.get("cause") or "")[:64],
            origin=str(details.get("origin") or "")[:32],
            reason_code=str(details.get("reason_code") or "")[:32],
            description=str(details.get("description") or "")[:500],
            will_attempt_retry=retry if isinstance(retry, bool) else None,
        )


def parse_created_at(value: Any) -> datetime:
    """GoCardless timestamps: ISO 8601 UTC with a Z (an offset is accepted; naive is refused)."""
    if not isinstance(value, str) or not value:
        raise MalformedEvent("An event needs created_at.")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedEvent(f"created_at is not a timestamp: {value!r}") from None
    if moment.tzinfo is None:
        raise MalformedEvent("created_at must carry its timezone.")
    return moment.astimezone(UTC)
