"""§9 through every surface: each action × role over HTTP, in the portal, the admin and the API.

The same table (rbac_table.py) drives every surface. An allowed action must
have its effect (a payment, link, retry, refund, void, granted approval, a
page); a denied one must be refused with a 4xx and leave nothing behind. The
admin is a read-only surface: it shows payments and the audit log to exactly
the roles §9 names, and offers no money action to anyone. The staff API is
walked endpoint by endpoint with each credential it accepts (a portal session,
a tablet token).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from audit.actors import Actor
from payments import flows, services
from payments.api.tokens import staff_api_token_issue
from payments.models import (
    ApprovalRequest,
    Payment,
    PaymentLink,
    PaymentMethod,
    PaymentState,
    Refund,
    TargetType,
)
from practices.roles import Role
from tests.security.rbac_table import CASES, Action, staff_for

pytestmark = pytest.mark.django_db


def _cash(practice, site, patient, actor, amount="40.00") -> Payment:
    payment = services.payment_create(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-RBAC",
        amount=amount,
        method=PaymentMethod.CASH,
    )
    services.tender_record_received(payment_id=payment.id, actor=actor)
    return payment


def _failed_terminal_payment(practice, site, patient, terminal, actor) -> Payment:
    payment = flows.terminal_payment_start(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-RBAC",
        amount="25.00",
        terminal=terminal,
    )
    services.payment_fail(
        payment_id=payment.id, actor=Actor.provider("dna"), code="declined", reason="Declined"
    )
    return payment


def _drawer(client, patient, site, **fields):
    data = {
        "site": str(site.id),
        "target_type": "invoice",
        "target_id": "INV-RBAC",
        "invoice_total": "60.00",
        "amount_choice": "total",
        "channel": "app",
        **fields,
    }
    return client.post(f"/patients/{patient.id}/pay/?target_type=invoice&target_id=INV-RBAC", data)


class Portal:
    """Performs one §9 action through the staff portal's own URLs; says whether it took effect."""

    def __init__(self, request, client, practice, site, terminal, patient, reception, manager):
        self.request = request
        self.client = client
        self.practice = practice
        self.site = site
        self.terminal = terminal
        self.patient = patient
        self.reception = Actor.staff(reception)
        self.manager = Actor.staff(manager)

    def initiate_payment(self):
        response = _drawer(
            self.client, self.patient, self.site, method="terminal", terminal=str(self.terminal.id)
        )
        return response.status_code, Payment.objects.filter(method=PaymentMethod.TERMINAL).exists()

    def retry_payment(self):
        failed = _failed_terminal_payment(
            self.practice, self.site, self.patient, self.terminal, self.reception
        )
        response = self.client.post(f"/payments/{failed.id}/retry/")
        return response.status_code, Payment.objects.filter(retry_of=failed).exists()

    def issue_pay_by_link(self):
        response = _drawer(self.client, self.patient, self.site, method="pay_by_link")
        return response.status_code, PaymentLink.objects.exists()

    def use_virtual_terminal(self):
        self.request.getfixturevalue("dna")  # the card page is DNA's: its simulator
        response = _drawer(self.client, self.patient, self.site, method="virtual_terminal")
        taken = Payment.objects.filter(method=PaymentMethod.VIRTUAL_TERMINAL).exists()
        return response.status_code, taken

    def issue_refund(self):
        paid = _cash(self.practice, self.site, self.patient, self.reception)
        response = self.client.post(
            f"/payments/{paid.id}/refund/", {"kind": "full", "reason_code": "patient_request"}
        )
        return response.status_code, Refund.objects.filter(payment=paid).exists()

    def issue_void(self):
        pending = services.payment_create(
            actor=self.reception,
            practice=self.practice,
            site=self.site,
            patient=self.patient,
            target_type=TargetType.INVOICE,
            target_id="INV-RBAC",
            amount="30.00",
            method=PaymentMethod.PAY_BY_LINK,
        )
        response = self.client.post(
            f"/payments/{pending.id}/void/", {"reason_code": "billing_error", "notes": ""}
        )
        pending.refresh_from_db()
        return response.status_code, pending.state == PaymentState.VOIDED

    def approve_refund(self):
        paid = _cash(self.practice, self.site, self.patient, self.reception, amount="900.00")
        approval = services.refund_request(
            payment_id=paid.id, actor=self.manager, amount="600.00", reason_code="billing_error"
        ).approval
        response = self.client.post(
            f"/approvals/{approval.id}/decide/", {"decision": "grant", "note": ""}
        )
        approval.refresh_from_db()
        return response.status_code, approval.status == ApprovalRequest.Status.GRANTED

    def view_payments(self):
        _cash(self.practice, self.site, self.patient, self.reception)
        response = self.client.get("/payments/")
        return response.status_code, response.status_code == 200 and b"INV-RBAC" in (
            response.content
        )

    def view_audit_log(self):
        _cash(self.practice, self.site, self.patient, self.reception)
        response = self.client.get("/audit/export/?format=jsonl")
        body = b"".join(response.streaming_content) if response.status_code == 200 else b""
        return response.status_code, b"payment.initiated" in body


@pytest.fixture
def portal(request, client, practice, site, terminal, patient, reception, refund_manager):
    return Portal(request, client, practice, site, terminal, patient, reception, refund_manager)


# The portal pages that perform each action (by default the Portal method named after it).
PORTAL_PAGES: dict[Action, tuple[str, ...]] = {
    Action.INITIATE_PAYMENT: ("initiate_payment", "retry_payment")
}
PORTAL_CASES = [
    pytest.param(
        action, role, allowed, page, id=f"{page}-{role.value}-{'allowed' if allowed else 'denied'}"
    )
    for action, role, allowed in CASES
    for page in PORTAL_PAGES.get(action, (action.value,))
]


@pytest.mark.parametrize(("action", "role", "allowed", "page"), PORTAL_CASES)
def test_portal_surface(action, role, allowed, page, portal, client, practice):
    client.force_login(staff_for(role, practice))

    status, took_effect = getattr(portal, page)()

    assert took_effect is allowed, (action, role, status)
    if allowed:
        assert status in (200, 302)
    else:
        assert 400 <= status < 500


# --- The admin: read-only, same table ------------------------------------------------

ADMIN_PAGES = {
    Action.VIEW_PAYMENTS: "/admin/payments/payment/",
    Action.VIEW_AUDIT_LOG: "/admin/audit/auditevent/",
}
ADMIN_MARKERS = {Action.VIEW_PAYMENTS: "INV-RBAC", Action.VIEW_AUDIT_LOG: "Payment Initiated"}
ADMIN_CASES = [case for case in CASES if case[0] in ADMIN_PAGES]


@pytest.mark.parametrize(
    ("action", "role", "allowed"),
    ADMIN_CASES,
    ids=[f"{a.value}-{r.value}-{'allowed' if ok else 'denied'}" for a, r, ok in ADMIN_CASES],
)
def test_admin_shows_records_to_exactly_the_roles_of_the_table(
    action, role, allowed, client, practice, site, patient, reception_actor
):
    _cash(practice, site, patient, reception_actor)
    # Every role gets the staff flag here, so only the §9 permission decides.
    client.force_login(staff_for(role, practice, is_staff=True))

    response = client.get(ADMIN_PAGES[action])

    assert response.status_code == (200 if allowed else 403)
    shown = ADMIN_MARKERS[action] in response.content.decode()
    assert shown is allowed


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
def test_admin_offers_no_money_action_to_any_role(
    role, client, practice, site, patient, reception_actor, manager_actor
):
    """Money moves only through the service layer (portal, API); the admin cannot add or change."""
    paid = _cash(practice, site, patient, reception_actor, amount="900.00")
    approval = services.refund_request(
        payment_id=paid.id, actor=manager_actor, amount="600.00", reason_code="billing_error"
    ).approval
    client.force_login(staff_for(role, practice, is_staff=True))
    attempts = [
        ("/admin/payments/payment/add/", {"amount": "10.00", "method": "virtual_terminal"}),
        (f"/admin/payments/payment/{paid.id}/change/", {"state": "refunded"}),
        (f"/admin/payments/payment/{paid.id}/delete/", {"post": "yes"}),
        ("/admin/payments/refund/add/", {"payment": str(paid.id), "amount": "10.00"}),
        (f"/admin/payments/approvalrequest/{approval.id}/change/", {"status": "granted"}),
    ]

    statuses = [client.post(url, data).status_code for url, data in attempts]

    assert statuses == [403] * len(attempts)
    paid.refresh_from_db()
    approval.refresh_from_db()
    assert (paid.state, paid.refunded_amount) == (PaymentState.CAPTURED, Decimal("0.00"))
    assert approval.status == ApprovalRequest.Status.PENDING
    assert not Refund.objects.exists()


# --- The REST API (tablet endpoints, payments/api): every endpoint, both credentials ---------


class Api:
    """Performs the §9 actions the staff API offers, one method per endpoint.

    `client` carries the credential under test: a portal session or a tablet
    token (`Authorization: Bearer pst_...`).
    """

    def __init__(self, client, practice, site, terminal, patient, reception):
        self.client = client
        self.practice = practice
        self.site = site
        self.terminal = terminal
        self.patient = patient
        self.reception = Actor.staff(reception)

    def _collect(self, **extra):
        body = {
            "patient_id": str(self.patient.id),
            "site_id": str(self.site.id),
            "target_type": "invoice",
            "target_id": "INV-RBAC",
            "amount": "60.00",
            **extra,
        }
        return self.client.post("/api/v1/staff/collections/", body, content_type="application/json")

    def collect_on_terminal(self):
        response = self._collect(method="terminal", terminal_id=str(self.terminal.id))
        return response, Payment.objects.filter(method=PaymentMethod.TERMINAL).exists()

    def retry_terminal_payment(self):
        failed = _failed_terminal_payment(
            self.practice, self.site, self.patient, self.terminal, self.reception
        )
        response = self.client.post(
            f"/api/v1/staff/payments/{failed.id}/retry/", content_type="application/json"
        )
        return response, Payment.objects.filter(retry_of=failed).exists()

    def collect_by_link(self):
        response = self._collect(method="pay_by_link", channel="app")
        return response, PaymentLink.objects.exists()

    def read_payment(self):
        paid = _cash(self.practice, self.site, self.patient, self.reception)
        response = self.client.get(f"/api/v1/staff/payments/{paid.id}/")
        return response, response.status_code == 200 and response.json()["id"] == str(paid.id)

    def list_terminals(self):
        response = self.client.get("/api/v1/staff/terminals/")
        listed = response.json().get("terminals", []) if response.status_code == 200 else []
        return response, [t["id"] for t in listed] == [str(self.terminal.id)]


# Which §9 action each endpoint performs. The terminal list is practice set-up that the
# portal shows everyone who may see payments (the drawer's terminal picker, each
# payment's detail), so it is "view payment history"; sending to a terminal is not.
API_ENDPOINTS: dict[Action, tuple[str, ...]] = {
    Action.INITIATE_PAYMENT: ("collect_on_terminal", "retry_terminal_payment"),
    Action.ISSUE_PAY_BY_LINK: ("collect_by_link",),
    Action.VIEW_PAYMENTS: ("read_payment", "list_terminals"),
}
API_CREDENTIALS = ("session", "token")
API_CASES = [
    pytest.param(
        action,
        role,
        allowed,
        endpoint,
        credential,
        id=f"{endpoint}-{role.value}-{credential}-{'allowed' if allowed else 'denied'}",
    )
    for action, role, allowed in CASES
    for endpoint in API_ENDPOINTS.get(action, ())
    for credential in API_CREDENTIALS
]


def _signed_in(client, user, credential: str) -> Client:
    """A client holding `user`'s portal session, or a fresh one holding only a tablet token."""
    if credential == "session":
        client.force_login(user)
        return client
    token = staff_api_token_issue(user=user, label="rbac").token
    return Client(headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("action", "role", "allowed", "endpoint", "credential"), API_CASES)
def test_api_surface(
    action,
    role,
    allowed,
    endpoint,
    credential,
    client,
    practice,
    site,
    terminal,
    patient,
    reception,
):
    user = staff_for(role, practice)
    api = Api(_signed_in(client, user, credential), practice, site, terminal, patient, reception)

    response, took_effect = getattr(api, endpoint)()

    assert took_effect is allowed, (action, role, credential, response.status_code)
    if allowed:
        assert 200 <= response.status_code < 300
    else:  # refused for the permission, not for a bad credential or request
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"
