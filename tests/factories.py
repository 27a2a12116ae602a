"""factory-boy factories for tenancy and people. Payments are made through the real services."""

from __future__ import annotations

import factory
from django.contrib.auth.models import Group, User

from practices.models import Patient, PatientKind, Practice, PracticeGroup, Site, StaffProfile
from practices.roles import Role
from terminals.models import Terminal, TerminalKind


class PracticeGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PracticeGroup

    name = factory.Sequence(lambda n: f"Group {n}")


class PracticeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Practice

    group = factory.SubFactory(PracticeGroupFactory)
    name = factory.Sequence(lambda n: f"Practice {n}")
    dna_terminal_id = factory.Sequence(lambda n: f"online-{n}")


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    practice = factory.SubFactory(PracticeFactory)
    name = factory.Sequence(lambda n: f"Site {n}")


class TerminalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Terminal

    site = factory.SubFactory(SiteFactory)
    practice = factory.SelfAttribute("site.practice")
    label = factory.Sequence(lambda n: f"Terminal {n}")
    kind = TerminalKind.COUNTERTOP
    tid = factory.Sequence(lambda n: f"TID{n:08d}")


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    practice = factory.SubFactory(PracticeFactory)
    kind = PatientKind.PATIENT
    pms_patient_id = factory.Sequence(lambda n: f"PMS-{n}")
    display_name = factory.Sequence(lambda n: f"Patient {n}")
    email = factory.Sequence(lambda n: f"patient{n}@example.com")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = "Sam"
    last_name = factory.Sequence(lambda n: f"Staff{n}")
    password = factory.django.Password("pass-word-123")


def make_staff(
    *roles: Role, practice=None, sites=None, all_sites=True, group=None, **user_fields
) -> User:
    """A staff user holding `roles` at `practice` (or at `group` for group operators)."""
    user = UserFactory(**user_fields)
    user.groups.set(Group.objects.filter(name__in=[r.value for r in roles]))
    profile = StaffProfile.objects.create(
        user=user,
        practice=None if group else practice,
        practice_group=group,
        all_sites=all_sites and not sites,
    )
    if sites:
        profile.sites.set(sites)
    user.save()
    return User.objects.get(pk=user.pk)  # fresh: no cached permissions
