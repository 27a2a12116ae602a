"""The inbound contracts: which module may send which event, and who handles it.

The table is the whole surface: a module or event type not listed here is
answered 404. Each handler takes the parsed JSON body, validates it against
its serializer, calls the service layer and returns an `Answer`. The payloads
are documented in docs/contracts.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from integrations.inbound import acp, appointments, inventory, proposals, rewards
from integrations.inbound.inputs import Answer
from integrations.inbound.models import Module


@dataclass(frozen=True)
class Contract:
    module: str
    event_type: str
    handle: Callable[[dict], Answer]


CONTRACTS: dict[tuple[str, str], Contract] = {
    (c.module, c.event_type): c
    for c in (
        Contract(Module.APPOINTMENT_MANAGER, "deposit_requested", appointments.deposit_requested),
        Contract(
            Module.APPOINTMENT_MANAGER, "attendance_reported", appointments.attendance_reported
        ),
        Contract(Module.REWARDS_MANAGER, "credit_apply", rewards.credit_apply),
        Contract(
            Module.SMART_TREATMENT_PROPOSALS, "proposal_accepted", proposals.proposal_accepted
        ),
        Contract(Module.ACP_FINANCE_CENTRE, "mandate_updated", acp.mandate_updated),
        Contract(Module.ACP_FINANCE_CENTRE, "payment_retry", acp.payment_retry),
        Contract(Module.ACP_FINANCE_CENTRE, "dunning_step", acp.dunning_step),
        Contract(Module.ACP_FINANCE_CENTRE, "usage_charge", acp.usage_charge),
        Contract(Module.INVENTORY_MANAGER, "invoice_matched", inventory.invoice_matched),
    )
}


def contract_for(module: str, event_type: str) -> Contract | None:
    return CONTRACTS.get((module, event_type))
