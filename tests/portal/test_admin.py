"""The Django admin: governed records are read-only and scoped exactly like the portal."""

from __future__ import annotations

import pytest

from practices.roles import Role
from tests.factories import PracticeFactory, SiteFactory, make_staff
from tests.payments.helpers import captured


@pytest.fixture
def finance_admin(practice):
    user = make_staff(Role.FINANCE_ADMIN, practice=practice)
    user.is_staff = True
    user.save()
    return user


def test_finance_admin_sees_their_practice_payments_read_only(
    client, finance_admin, practice, site, patient, terminal, reception_actor, provider_actor
):
    payment = captured(reception_actor, provider_actor, practice, site, patient, terminal=terminal)
    other = PracticeFactory()
    other_site = SiteFactory(practice=other)
    from audit.actors import Actor
    from tests.factories import PatientFactory, TerminalFactory

    theirs = captured(
        Actor.staff(make_staff(Role.RECEPTION, practice=other)),
        provider_actor,
        other,
        other_site,
        PatientFactory(practice=other),
        terminal=TerminalFactory(site=other_site, practice=other),
    )
    client.force_login(finance_admin)
    listing = client.get("/admin/payments/payment/")
    assert listing.status_code == 200 and str(payment.id) in listing.content.decode()
    assert str(theirs.id) not in listing.content.decode()
    assert client.get(f"/admin/payments/payment/{theirs.id}/change/").status_code in (302, 404)
    detail = client.get(f"/admin/payments/payment/{payment.id}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content  # nothing to save: read-only
    assert (
        client.post(f"/admin/payments/payment/{payment.id}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/admin/payments/payment/add/").status_code == 403


def test_reception_cannot_use_the_admin_for_payments(client, practice):
    user = make_staff(Role.RECEPTION, practice=practice)
    user.is_staff = True
    user.save()
    client.force_login(user)
    # Reception holds VIEW_PAYMENTS, so may look, but never change.
    assert client.get("/admin/payments/payment/add/").status_code == 403
    assert client.get("/admin/audit/auditevent/").status_code == 403
