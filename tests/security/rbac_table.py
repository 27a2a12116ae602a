"""The §9 access table as the spec states it, one row per (action, role), for every surface.

Written from the spec text, independent of practices/roles.py, so a change
there that breaks §9 fails here. Each surface test (portal, admin and REST API
in test_rbac_surfaces.py) walks CASES and performs the action through its own
HTTP endpoints as a user of that role. A surface says which of its endpoints
perform which action (several may: the API's collect-on-terminal and retry both
initiate a payment) and never restates who may do it.

    from tests.security.rbac_table import CASES, Action, staff_for

    @pytest.mark.parametrize(("action", "role", "allowed"), CASES, ids=CASE_IDS)
    def test_some_surface(action, role, allowed, ...): ...
"""

from __future__ import annotations

from enum import StrEnum

from practices.roles import Role
from tests.factories import make_staff


class Action(StrEnum):
    """The §9 actions ("Action / Who may perform")."""

    INITIATE_PAYMENT = "initiate_payment"  # terminal / online: authorised staff (standard role)
    ISSUE_PAY_BY_LINK = "issue_pay_by_link"  # authorised staff (standard role)
    USE_VIRTUAL_TERMINAL = "use_virtual_terminal"  # RBAC-restricted role only
    ISSUE_REFUND = "issue_refund"  # RBAC-restricted role
    ISSUE_VOID = "issue_void"  # RBAC-restricted role
    APPROVE_REFUND = "approve_refund"  # designated approver role
    VIEW_PAYMENTS = "view_payments"  # authorised staff
    VIEW_AUDIT_LOG = "view_audit_log"  # compliance / admin role


_STANDARD = {Role.RECEPTION, Role.VIRTUAL_TERMINAL_OPERATOR, Role.REFUND_MANAGER}

ALLOWED: dict[Action, frozenset[Role]] = {
    Action.INITIATE_PAYMENT: frozenset(_STANDARD),
    Action.ISSUE_PAY_BY_LINK: frozenset(_STANDARD),
    Action.USE_VIRTUAL_TERMINAL: frozenset({Role.VIRTUAL_TERMINAL_OPERATOR}),
    Action.ISSUE_REFUND: frozenset({Role.REFUND_MANAGER, Role.FINANCE_ADMIN}),
    Action.ISSUE_VOID: frozenset({Role.REFUND_MANAGER, Role.FINANCE_ADMIN}),
    Action.APPROVE_REFUND: frozenset({Role.REFUND_APPROVER}),
    Action.VIEW_PAYMENTS: frozenset(Role),
    Action.VIEW_AUDIT_LOG: frozenset({Role.FINANCE_ADMIN, Role.COMPLIANCE_ADMIN}),
}

CASES: list[tuple[Action, Role, bool]] = [
    (action, role, role in ALLOWED[action]) for action in Action for role in Role
]
CASE_IDS = [
    f"{action.value}-{role.value}-{'allowed' if ok else 'denied'}" for action, role, ok in CASES
]


def staff_for(role: Role, practice, **user_fields):
    """A user holding `role` at `practice` (a group operator at its group)."""
    if role == Role.GROUP_OPERATOR:
        return make_staff(role, group=practice.group, **user_fields)
    return make_staff(role, practice=practice, **user_fields)
