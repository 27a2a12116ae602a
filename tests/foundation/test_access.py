"""§9 role table walked both ways, and tenant isolation (practice, site, group)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.actors import Actor
from payments import services
from payments.errors import NotFound
from payments.models import PaymentMethod, TargetType
from payments.selectors import payment_get_for, payments_visible_to
from practices import access
from practices.access import NotPermitted
from practices.roles import Perm, Role
from tests.factories import (
    PatientFactory,
    PracticeFactory,
    PracticeGroupFactory,
    SiteFactory,
    make_staff,
)

# The §9 table as the spec states it (independent of practices/roles.py).
ALLOWED = {
    Perm.INITIATE_PAYMENT: {Role.RECEPTION, Role.VIRTUAL_TERMINAL_OPERATOR, Role.REFUND_MANAGER},
    Perm.ISSUE_PAY_BY_LINK: {Role.RECEPTION, Role.VIRTUAL_TERMINAL_OPERATOR, Role.REFUND_MANAGER},
    Perm.USE_VIRTUAL_TERMINAL: {Role.VIRTUAL_TERMINAL_OPERATOR},
    Perm.ISSUE_REFUND: {Role.REFUND_MANAGER, Role.FINANCE_ADMIN},
    Perm.ISSUE_VOID: {Role.REFUND_MANAGER, Role.FINANCE_ADMIN},
    Perm.APPROVE_REFUND: {Role.REFUND_APPROVER},
    Perm.VIEW_PAYMENTS: set(Role),
    Perm.VIEW_AUDIT_LOG: {Role.FINANCE_ADMIN, Role.COMPLIANCE_ADMIN},
    Perm.MANAGE_EXCEPTIONS: {Role.FINANCE_ADMIN},
}
CASES = [(perm, role) for perm in ALLOWED for role in Role]


def _staff(role, practice):
    if role == Role.GROUP_OPERATOR:
        return make_staff(role, group=practice.group)
    return make_staff(role, practice=practice)


@pytest.mark.parametrize(("perm", "role"), CASES, ids=[f"{p.value}-{r.value}" for p, r in CASES])
def test_role_table(perm, role, practice, site):
    user = _staff(role, practice)
    assert access.has_perm(user, perm) is (role in ALLOWED[perm])


def _captured_cash(practice, site, patient, actor, amount="40.00"):
    payment = services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-9",
        amount=amount,
        method=PaymentMethod.CASH,
    )
    services.tender_record_received(payment_id=payment.id, actor=actor)
    return payment


def _attempt(action, user, *, practice, site, terminal, patient, reception_actor, refund_manager):
    """Perform one §9 action through the real service layer as `user`."""
    actor = Actor.staff(user)
    common = dict(
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-1",
        amount="25.00",
    )
    if action == "initiate_terminal":
        services.payment_create(
            actor=actor, method=PaymentMethod.TERMINAL, terminal=terminal, **common
        )
    elif action == "issue_pay_by_link":
        services.payment_create(actor=actor, method=PaymentMethod.PAY_BY_LINK, **common)
    elif action == "use_virtual_terminal":
        services.payment_create(actor=actor, method=PaymentMethod.VIRTUAL_TERMINAL, **common)
    elif action == "refund":
        paid = _captured_cash(practice, site, patient, reception_actor)
        services.refund_request(
            payment_id=paid.id, actor=actor, amount="5.00", reason_code="patient_request"
        )
    elif action == "void":
        pending = services.payment_create(
            actor=reception_actor, method=PaymentMethod.PAY_BY_LINK, **common
        )
        services.payment_void(payment_id=pending.id, actor=actor, reason_code="billing_error")
    elif action == "approve_refund":
        paid = _captured_cash(practice, site, patient, reception_actor, amount="900.00")
        result = services.refund_request(
            payment_id=paid.id,
            actor=Actor.staff(refund_manager),
            amount="600.00",
            reason_code="billing_error",
        )
        services.approval_grant(approval_id=result.approval.id, actor=actor)
    else:  # pragma: no cover - the table below names every action
        raise AssertionError(action)


SERVICE_ACTIONS = {
    "initiate_terminal": ALLOWED[Perm.INITIATE_PAYMENT],
    "issue_pay_by_link": ALLOWED[Perm.ISSUE_PAY_BY_LINK],
    "use_virtual_terminal": ALLOWED[Perm.USE_VIRTUAL_TERMINAL],
    "refund": ALLOWED[Perm.ISSUE_REFUND],
    "void": ALLOWED[Perm.ISSUE_VOID],
    "approve_refund": ALLOWED[Perm.APPROVE_REFUND],
}
SERVICE_CASES = [(action, role) for action in SERVICE_ACTIONS for role in Role]


@pytest.mark.parametrize(
    ("action", "role"), SERVICE_CASES, ids=[f"{a}-{r.value}" for a, r in SERVICE_CASES]
)
def test_role_table_through_the_service_layer(
    action, role, practice, site, terminal, patient, reception_actor, refund_manager
):
    user = _staff(role, practice)
    kwargs = dict(
        practice=practice,
        site=site,
        terminal=terminal,
        patient=patient,
        reception_actor=reception_actor,
        refund_manager=refund_manager,
    )
    if role in SERVICE_ACTIONS[action]:
        _attempt(action, user, **kwargs)
    else:
        with pytest.raises(NotPermitted):
            _attempt(action, user, **kwargs)


# --- Tenant isolation ----------------------------------------------------------


@pytest.fixture
def two_practices(db):
    group = PracticeGroupFactory()
    a = PracticeFactory(group=group)
    b = PracticeFactory(group=group)
    outsider = PracticeFactory()  # another group
    sites = {p: SiteFactory(practice=p) for p in (a, b, outsider)}
    payments = {}
    for p in (a, b, outsider):
        staff = make_staff(Role.RECEPTION, practice=p)
        payments[p] = services.payment_create(
            actor=Actor.staff(staff),
            practice=p,
            site=sites[p],
            patient=PatientFactory(practice=p),
            target_type=TargetType.INVOICE,
            target_id="INV-T",
            amount=Decimal("10.00"),
            method=PaymentMethod.PAY_BY_LINK,
        )
    return group, a, b, outsider, sites, payments


def test_staff_see_only_their_practice(two_practices):
    _group, a, b, outsider, _sites, payments = two_practices
    user = make_staff(Role.RECEPTION, practice=a)
    assert list(payments_visible_to(user)) == [payments[a]]
    assert payment_get_for(user, payments[a].id) == payments[a]
    for other in (b, outsider):
        with pytest.raises(NotFound):
            payment_get_for(user, payments[other].id)


def test_staff_cannot_act_in_another_practice(two_practices):
    _group, a, b, _outsider, sites, payments = two_practices
    manager = make_staff(Role.REFUND_MANAGER, practice=a)
    with pytest.raises(NotPermitted):
        services.payment_void(
            payment_id=payments[b].id, actor=Actor.staff(manager), reason_code="other"
        )
    with pytest.raises(NotPermitted):
        services.payment_create(
            actor=Actor.staff(manager),
            practice=b,
            site=sites[b],
            patient=PatientFactory(practice=b),
            target_type=TargetType.INVOICE,
            target_id="X",
            amount="1.00",
            method=PaymentMethod.CASH,
        )


def test_patient_of_another_practice_is_not_found(practice, site, reception_actor):
    stranger = PatientFactory()  # another practice
    with pytest.raises(NotFound):
        services.payment_create(
            actor=reception_actor,
            practice=practice,
            site=site,
            patient=stranger,
            target_type=TargetType.INVOICE,
            target_id="INV",
            amount="5.00",
            method=PaymentMethod.CASH,
        )


def test_site_limited_staff_see_and_act_only_at_their_sites(practice, site, other_site, patient):
    at_main = make_staff(Role.RECEPTION, practice=practice, sites=[site])
    everywhere = make_staff(Role.RECEPTION, practice=practice)
    kwargs = dict(
        practice=practice,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="I",
        amount="3.00",
        method=PaymentMethod.CASH,
    )
    mine = services.payment_create(actor=Actor.staff(at_main), site=site, **kwargs)
    theirs = services.payment_create(actor=Actor.staff(everywhere), site=other_site, **kwargs)
    assert list(payments_visible_to(at_main)) == [mine]
    assert set(payments_visible_to(everywhere)) == {mine, theirs}
    with pytest.raises(NotPermitted):
        services.payment_create(actor=Actor.staff(at_main), site=other_site, **kwargs)


def test_group_operator_sees_every_practice_of_their_group_and_nothing_else(two_practices):
    group, a, b, outsider, _sites, payments = two_practices
    operator = make_staff(Role.GROUP_OPERATOR, group=group)
    assert set(payments_visible_to(operator)) == {payments[a], payments[b]}
    with pytest.raises(NotFound):
        payment_get_for(operator, payments[outsider].id)
    assert not access.has_perm(operator, Perm.INITIATE_PAYMENT)


def test_inactive_or_profileless_users_see_nothing(two_practices):
    _group, a, _b, _outsider, _sites, _payments = two_practices
    user = make_staff(Role.FINANCE_ADMIN, practice=a)
    user.is_active = False
    user.save()
    assert list(payments_visible_to(user)) == []
    from tests.factories import UserFactory

    assert list(payments_visible_to(UserFactory())) == []
