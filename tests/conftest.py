"""Shared fixtures: a practice with sites, terminals, patients and staff in each §9 role."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.actors import Actor
from practices.roles import Role
from tests.factories import (
    PatientFactory,
    PracticeFactory,
    SiteFactory,
    TerminalFactory,
    make_staff,
)


@pytest.fixture
def practice(db):
    return PracticeFactory(refund_approval_threshold=Decimal("250.00"), rewards_enabled=True)


@pytest.fixture
def site(practice):
    return SiteFactory(practice=practice, name="Main Street")


@pytest.fixture
def other_site(practice):
    return SiteFactory(practice=practice, name="High Street")


@pytest.fixture
def terminal(site):
    return TerminalFactory(site=site, practice=site.practice, label="Reception 1")


@pytest.fixture
def patient(practice):
    return PatientFactory(practice=practice)


@pytest.fixture
def reception(practice):
    return make_staff(Role.RECEPTION, practice=practice)


@pytest.fixture
def refund_manager(practice):
    return make_staff(Role.REFUND_MANAGER, practice=practice)


@pytest.fixture
def approver(practice):
    return make_staff(Role.REFUND_APPROVER, practice=practice)


@pytest.fixture
def reception_actor(reception):
    return Actor.staff(reception)


@pytest.fixture
def manager_actor(refund_manager):
    return Actor.staff(refund_manager)


@pytest.fixture
def approver_actor(approver):
    return Actor.staff(approver)


@pytest.fixture
def provider_actor():
    return Actor.provider("dna")
