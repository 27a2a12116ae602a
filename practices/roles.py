"""The §9 access table: roles, the permissions each grants, and how they become Django groups.

This module is the one place the table lives. A data migration (and any later
one that changes the table) calls `sync_role_groups`, which makes the Django
groups and their permissions match it exactly.
"""

from __future__ import annotations

from enum import StrEnum


class Perm(StrEnum):
    """Permissions, declared on `payments.Payment.Meta.permissions`."""

    INITIATE_PAYMENT = "initiate_payment"
    ISSUE_PAY_BY_LINK = "issue_pay_by_link"
    USE_VIRTUAL_TERMINAL = "use_virtual_terminal"
    ISSUE_REFUND = "issue_refund"
    ISSUE_VOID = "issue_void"
    APPROVE_REFUND = "approve_refund"
    VIEW_PAYMENTS = "view_payments"
    VIEW_AUDIT_LOG = "view_audit_log"
    MANAGE_EXCEPTIONS = "manage_exceptions"

    @property
    def qualified(self) -> str:
        return f"payments.{self.value}"


PERMISSION_NAMES = {
    Perm.INITIATE_PAYMENT: "Initiate terminal / online payment",
    Perm.ISSUE_PAY_BY_LINK: "Issue pay-by-link",
    Perm.USE_VIRTUAL_TERMINAL: "Use virtual terminal",
    Perm.ISSUE_REFUND: "Issue refund",
    Perm.ISSUE_VOID: "Issue void",
    Perm.APPROVE_REFUND: "Approve high-value refund",
    Perm.VIEW_PAYMENTS: "View payment history",
    Perm.VIEW_AUDIT_LOG: "View and export the audit log",
    Perm.MANAGE_EXCEPTIONS: "Manage exceptions: deposits, dead letters, redelivery",
}


class Role(StrEnum):
    RECEPTION = "reception"
    VIRTUAL_TERMINAL_OPERATOR = "virtual_terminal_operator"
    REFUND_MANAGER = "refund_manager"
    REFUND_APPROVER = "refund_approver"
    FINANCE_ADMIN = "finance_admin"
    COMPLIANCE_ADMIN = "compliance_admin"
    GROUP_OPERATOR = "group_operator"


_STANDARD = {Perm.INITIATE_PAYMENT, Perm.ISSUE_PAY_BY_LINK, Perm.VIEW_PAYMENTS}

ROLE_PERMISSIONS: dict[Role, frozenset[Perm]] = {
    # Standard staff: take payments and send links, see history.
    Role.RECEPTION: frozenset(_STANDARD),
    Role.VIRTUAL_TERMINAL_OPERATOR: frozenset(_STANDARD | {Perm.USE_VIRTUAL_TERMINAL}),
    Role.REFUND_MANAGER: frozenset(_STANDARD | {Perm.ISSUE_REFUND, Perm.ISSUE_VOID}),
    # The designated approver: approves, does not originate.
    Role.REFUND_APPROVER: frozenset({Perm.VIEW_PAYMENTS, Perm.APPROVE_REFUND}),
    Role.FINANCE_ADMIN: frozenset(
        {
            Perm.VIEW_PAYMENTS,
            Perm.ISSUE_REFUND,
            Perm.ISSUE_VOID,
            Perm.VIEW_AUDIT_LOG,
            Perm.MANAGE_EXCEPTIONS,
        }
    ),
    Role.COMPLIANCE_ADMIN: frozenset({Perm.VIEW_PAYMENTS, Perm.VIEW_AUDIT_LOG}),
    # Central visibility across the group's practices, no money actions.
    Role.GROUP_OPERATOR: frozenset({Perm.VIEW_PAYMENTS}),
}

ROLE_LABELS = {
    Role.RECEPTION: "Reception (standard staff)",
    Role.VIRTUAL_TERMINAL_OPERATOR: "Virtual terminal operator",
    Role.REFUND_MANAGER: "Refund manager",
    Role.REFUND_APPROVER: "Refund approver",
    Role.FINANCE_ADMIN: "Finance admin",
    Role.COMPLIANCE_ADMIN: "Compliance admin",
    Role.GROUP_OPERATOR: "Group operator",
}

# Roles whose holders may use the Django admin (staff flag).
ADMIN_ROLES = frozenset({Role.FINANCE_ADMIN, Role.COMPLIANCE_ADMIN})


def sync_role_groups(apps) -> None:
    """Make the Django groups and their permissions match ROLE_PERMISSIONS.

    Takes the migration's `apps` so it works in a data migration, where the
    permissions do not exist yet (Django creates them after migrating).
    """
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="payments", model="payment")
    permissions = {}
    for perm in Perm:
        permissions[perm], _ = Permission.objects.get_or_create(
            content_type=content_type,
            codename=perm.value,
            defaults={"name": PERMISSION_NAMES[perm]},
        )
    for role, granted in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role.value)
        group.permissions.set([permissions[perm] for perm in granted])
