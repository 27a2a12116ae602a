"""The audit admin: read-only for everyone, scoped to the user's practices, export hand-over."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from audit.models import AuditEvent
from practices.roles import Role
from tests.audit.helpers import record_events
from tests.factories import PracticeFactory, make_staff

CHANGELIST = reverse("admin:audit_auditevent_changelist")


@pytest.fixture
def events(practice, site):
    return record_events(practice, 3, site=site)


@pytest.fixture
def other_events(db):
    return record_events(PracticeFactory(name="Elsewhere Dental"), 2)


@pytest.fixture
def compliance(practice):
    return make_staff(Role.COMPLIANCE_ADMIN, practice=practice, is_staff=True)


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.com", "pass-word-123")


def test_compliance_admin_lists_only_their_practice(client, compliance, events, other_events):
    client.force_login(compliance)

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    shown = {event.pk for event in response.context["cl"].result_list}
    assert shown == {event.pk for event in events}
    assert b"Elsewhere Dental" not in response.content  # not even in the practice filter


@pytest.mark.parametrize("who", ["compliance", "superuser"])
def test_nobody_can_add_change_or_delete(client, request, who, events):
    client.force_login(request.getfixturevalue(who))
    event = events[0]

    add = client.get(reverse("admin:audit_auditevent_add"))
    change = client.post(
        reverse("admin:audit_auditevent_change", args=[event.pk]), {"reason_code": "edited"}
    )
    delete = client.post(reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"})

    assert add.status_code == 403
    assert change.status_code == 403
    assert delete.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).reason_code == ""
    assert AuditEvent.objects.count() == 3
    detail = client.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert detail.status_code == 200  # view only


def test_staff_without_the_audit_permission_cannot_open_it(client, practice, events):
    client.force_login(make_staff(Role.RECEPTION, practice=practice, is_staff=True))
    assert client.get(CHANGELIST).status_code == 403


def test_search_by_provider_reference_or_payment_id(client, compliance, events):
    client.force_login(compliance)

    by_reference = client.get(CHANGELIST, {"q": "dna-1"})
    by_payment = client.get(CHANGELIST, {"q": str(events[2].payment_id)})

    assert [e.pk for e in by_reference.context["cl"].result_list] == [events[1].pk]
    assert [e.pk for e in by_payment.context["cl"].result_list] == [events[2].pk]


def test_export_action_hands_over_to_the_download(client, compliance, practice, events):
    client.force_login(compliance)

    response = client.post(
        CHANGELIST,
        {"action": "export_csv", "_selected_action": [events[0].pk, events[1].pk]},
    )

    assert response.status_code == 302
    assert response["Location"] == f"/audit/export/?format=csv&practice={practice.id}"
