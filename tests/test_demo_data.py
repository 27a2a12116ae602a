"""`manage.py load_demo`: idempotent demo data, a login for every §9 role, DEBUG only."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from practices import access
from practices.management.commands.load_demo import DEMO_PASSWORD, LOGINS
from practices.models import Patient, PatientKind, Practice, PracticeGroup, Site, StaffProfile
from practices.roles import ROLE_PERMISSIONS, Role
from terminals.models import Terminal, TerminalKind

pytestmark = pytest.mark.django_db


def _load(**options) -> str:
    out = StringIO()
    with override_settings(DEBUG=True):
        call_command("load_demo", stdout=out, **options)
    return out.getvalue()


def _counts() -> dict[str, int]:
    return {
        "groups": PracticeGroup.objects.count(),
        "practices": Practice.objects.count(),
        "sites": Site.objects.count(),
        "terminals": Terminal.objects.count(),
        "patients": Patient.objects.filter(kind=PatientKind.PATIENT).count(),
        "prospects": Patient.objects.filter(kind=PatientKind.PROSPECT).count(),
        "users": User.objects.count(),
        "profiles": StaffProfile.objects.count(),
        "profile_sites": StaffProfile.sites.through.objects.count(),
        "user_groups": User.groups.through.objects.count(),
    }


def test_loading_twice_creates_no_duplicates():
    _load()
    first = _counts()
    _load()

    assert first == {
        "groups": 1,
        "practices": 2,
        "sites": 3,
        "terminals": 6,
        "patients": 6,
        "prospects": 1,
        "users": 8,
        "profiles": 8,
        "profile_sites": 1,
        "user_groups": 8,
    }
    assert _counts() == first


def test_practices_sites_and_terminals():
    _load()

    group = PracticeGroup.objects.get(name="Primoro Demo Group")
    sites = {
        practice.name: sorted(practice.sites.values_list("name", flat=True))
        for practice in group.practices.all()
    }
    assert sites == {
        "Riverside Dental": ["Riverside East", "Riverside Main"],
        "Hilltop Dental": ["Hilltop Main"],
    }
    for site in Site.objects.all():
        kinds = sorted(site.terminals.values_list("kind", flat=True))
        assert kinds == [TerminalKind.COUNTERTOP, TerminalKind.HANDHELD]
        assert set(site.terminals.values_list("practice_id", flat=True)) == {site.practice_id}
    assert sorted(Terminal.objects.values_list("tid", flat=True)) == [
        f"DEMO-TID-{n:04d}" for n in range(1, 7)
    ]
    riverside = Practice.objects.get(name="Riverside Dental")
    assert Patient.objects.get(practice=riverside, kind=PatientKind.PROSPECT).pms_patient_id == ""
    assert not Patient.objects.filter(kind=PatientKind.PATIENT, pms_patient_id="").exists()


def test_every_role_has_a_login_that_works(client):
    output = _load()

    assert {login.role for login in LOGINS} == set(Role)
    for login in LOGINS:
        assert login.username in output
        user = User.objects.get(username=login.username)
        assert [group.name for group in user.groups.all()] == [login.role.value]
        for perm in ROLE_PERMISSIONS[login.role]:
            assert access.has_perm(user, perm), (login.username, perm)
        assert client.login(username=login.username, password=DEMO_PASSWORD), login.username
        client.logout()
    assert DEMO_PASSWORD in output


def test_only_finance_and_compliance_admins_reach_the_django_admin():
    _load()

    staff = set(User.objects.filter(is_staff=True).values_list("username", flat=True))
    assert staff == {"finance_admin", "compliance_admin"}
    assert not User.objects.filter(is_superuser=True).exists()


def test_scopes_site_practice_and_group():
    _load()
    riverside_main = Site.objects.get(name="Riverside Main")
    riverside_east = Site.objects.get(name="Riverside East")
    hilltop = Practice.objects.get(name="Hilltop Dental")

    reception = User.objects.get(username="reception")
    assert access.site_ids_for(reception) == {riverside_main.id}
    assert not access.can_see(
        reception, practice_id=riverside_east.practice_id, site_id=riverside_east.id
    )
    assert access.practice_ids_for(User.objects.get(username="group_operator")) == set(
        Practice.objects.values_list("id", flat=True)
    )
    assert access.practice_ids_for(User.objects.get(username="hilltop_reception")) == {hilltop.id}


def test_a_changed_demo_password_is_reset_on_the_next_load(client):
    _load()
    user = User.objects.get(username="approver")
    user.set_password("something-else-entirely")
    user.save()

    _load()

    assert client.login(username="approver", password=DEMO_PASSWORD)


def test_refuses_to_run_when_debug_is_off_unless_forced():
    with override_settings(DEBUG=False), pytest.raises(CommandError, match="DEBUG=true"):
        call_command("load_demo", stdout=StringIO())
    assert PracticeGroup.objects.count() == 0

    with override_settings(DEBUG=False):
        call_command("load_demo", "--force", stdout=StringIO())
    assert User.objects.filter(username__in=[login.username for login in LOGINS]).count() == len(
        LOGINS
    )
