"""Where each outbound destination lives: its endpoint URL and signing secret.

The values come from settings (`OUTBOX_ENDPOINTS`, read from the environment
as `MODULE_<NAME>_URL` / `MODULE_<NAME>_SECRET`, and `PMS_WRITEBACK_URL` /
`PMS_WRITEBACK_SECRET`). A destination with no URL is disabled: the relay
parks its rows as `disabled` with the reason in `last_error` and logs it, and
the admin shows the list of disabled destinations, so nothing is dropped
silently. Rows parked this way are redelivered once the endpoint is configured
(except PMS writebacks that became a fallback task: those are done by hand).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from integrations.models import Destination

# The environment variables behind each destination, for messages and docs.
ENV_PREFIX = {
    Destination.COMMUNICATION_HUB: "MODULE_COMMUNICATION_HUB",
    Destination.TASK_MANAGER: "MODULE_TASK_MANAGER",
    Destination.FINANCIAL_INSIGHTS: "MODULE_FINANCIAL_INSIGHTS",
    Destination.REWARDS_MANAGER: "MODULE_REWARDS_MANAGER",
    Destination.CARE_PLAN: "MODULE_CARE_PLAN",
    Destination.HYGIENE: "MODULE_HYGIENE",
    Destination.INVENTORY: "MODULE_INVENTORY",
    Destination.TELEPHONY: "MODULE_TELEPHONY",
    Destination.PMS: "PMS_WRITEBACK",
}


@dataclass(frozen=True)
class Endpoint:
    destination: str
    url: str
    secret: str = ""

    @property
    def enabled(self) -> bool:
        """Deliverable: a URL to post to and a secret to sign with (we never send unsigned)."""
        return bool(self.url and self.secret)

    @property
    def disabled_reason(self) -> str:
        prefix = ENV_PREFIX.get(self.destination, self.destination.upper())
        missing = f"{prefix}_URL" if not self.url else f"{prefix}_SECRET"
        return f"Destination {self.destination} is disabled: {missing} is not configured."


def endpoint_for(destination: str) -> Endpoint:
    """The configured endpoint of one destination (disabled when it has no URL)."""
    configured = getattr(settings, "OUTBOX_ENDPOINTS", {}).get(str(destination)) or {}
    url = (configured.get("url") or "").strip()
    return Endpoint(destination=str(destination), url=url, secret=configured.get("secret") or "")


def endpoints() -> list[Endpoint]:
    """Every destination with its endpoint, in declaration order."""
    return [endpoint_for(destination) for destination in Destination.values]


def disabled_destinations() -> list[str]:
    return [endpoint.destination for endpoint in endpoints() if not endpoint.enabled]
