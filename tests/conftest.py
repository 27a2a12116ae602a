"""Shared fixtures: a practice with sites, terminals, patients and staff in each §9 role."""

from __future__ import annotations

import io
import logging
from decimal import Decimal

import pytest
from django.db import connection
from django.test import TransactionTestCase

from audit.actors import Actor
from practices.roles import Role
from primoro_payments.logging import configure
from tests.factories import (
    PatientFactory,
    PracticeFactory,
    SiteFactory,
    TerminalFactory,
    make_staff,
)


@pytest.fixture(autouse=True, scope="session")
def _flush_may_truncate_the_audit_table():
    """Transactional tests reset the database with TRUNCATE, which the audit table refuses.

    Only the test-database reset between transactional tests is let through, by
    the privileged path the audit trigger leaves open (the test database user is
    a superuser: `session_replication_role = replica` fires no ordinary
    trigger); every test still runs with the trigger in force.
    """
    original = TransactionTestCase._fixture_teardown

    def teardown(self):
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        try:
            return original(self)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET session_replication_role")

    TransactionTestCase._fixture_teardown = teardown
    yield
    TransactionTestCase._fixture_teardown = original


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


@pytest.fixture
def log_output():
    """Our real logging configuration, with its formatter writing into a buffer."""
    configure(level="INFO", fmt="json")
    root = logging.getLogger()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    yield buffer
    root.removeHandler(handler)
    configure(level="WARNING", fmt="json")
