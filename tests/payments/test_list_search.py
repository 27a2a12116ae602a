"""Search in the payments list: both ways of matching a patient name find the same payments.

(And paging: a cursor the sort did not give out is a 400 `invalid_cursor`, never a 500.)

A prefix matching few patients is resolved to their ids first (so every branch
of the search is an index look-up on a large table); a prefix matching more
than SEARCH_PATIENT_IDS_MAX patients is matched while walking the newest
payments. Either way the page holds exactly the payments of the matching
patients, plus any whose reference equals the text, and costs the same
number of queries. (benchmarks/bench_payments_list.py measures the speed.)
"""

from __future__ import annotations

import factory
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.actors import Actor
from payments.models import PaymentMethod
from payments.selectors import (
    SEARCH_PATIENT_IDS_MAX,
    InvalidCursor,
    PaymentFilters,
    _encode_cursor,
    payments_page,
)
from practices.roles import Role
from tests.factories import PatientFactory, PracticeFactory, SiteFactory, make_staff
from tests.payments.helpers import new_payment

pytestmark = pytest.mark.django_db


def _page(user, q: str):
    fresh = User.objects.select_related("staff_profile").get(pk=user.pk)
    with CaptureQueriesContext(connection) as queries:
        page = payments_page(fresh, PaymentFilters(q=q))
    return {p.target_id for p in page.rows}, len(queries)


@pytest.fixture
def many_graces(practice):
    """More patients called Grace than the id look-up takes: the broad branch is used."""
    return PatientFactory.create_batch(
        SEARCH_PATIENT_IDS_MAX + 1,
        practice=practice,
        display_name=factory.Sequence(lambda n: f"Grace Number{n}"),
    )


def _pay(reception_actor, practice, site, patient, target_id):
    return new_payment(
        reception_actor,
        practice,
        site,
        patient,
        method=PaymentMethod.CASH,
        target_id=target_id,
    )


def test_a_rare_and_a_common_name_prefix_find_exactly_their_patients_payments(
    practice, site, reception, reception_actor, many_graces
):
    zebedee = PatientFactory(practice=practice, display_name="Zebedee Quist")
    other = PatientFactory(practice=practice, display_name="Ada Lovelace")
    _pay(reception_actor, practice, site, many_graces[0], "INV-G1")
    _pay(reception_actor, practice, site, many_graces[-1], "INV-G2")
    _pay(reception_actor, practice, site, zebedee, "INV-Z1")
    _pay(reception_actor, practice, site, other, "INV-A1")
    elsewhere = PracticeFactory()
    outsider = PatientFactory(practice=elsewhere, display_name="Grace Elsewhere")
    staff_elsewhere = make_staff(Role.RECEPTION, practice=elsewhere)
    _pay(Actor.staff(staff_elsewhere), elsewhere, SiteFactory(practice=elsewhere), outsider, "X-1")

    broad, broad_queries = _page(reception, "gra")  # > SEARCH_PATIENT_IDS_MAX patients match
    narrow, narrow_queries = _page(reception, "zeb")  # one patient matches
    by_reference, reference_queries = _page(reception, "INV-A1")
    nothing, nothing_queries = _page(reception, "Nobody")

    assert broad == {"INV-G1", "INV-G2"}
    assert narrow == {"INV-Z1"}
    assert by_reference == {"INV-A1"}
    assert nothing == set()
    assert broad_queries == narrow_queries == reference_queries == nothing_queries


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        ("amount_high", _encode_cursor(["2026-01-05T10:00:00+00:00", "7" * 32])),  # a date
        ("newest", _encode_cursor(["12.50", "7" * 32])),  # an amount
        ("newest", _encode_cursor(["2026-01-05T10:00:00", "7" * 32])),  # no time zone
        ("amount_low", _encode_cursor(["NaN", "7" * 32])),
        ("amount_low", _encode_cursor(["12.50", "not-an-id"])),
        ("oldest", _encode_cursor(["2026-01-05T10:00:00+00:00"])),  # one value
        ("oldest", "%%%"),
    ],
)
def test_a_cursor_the_sort_did_not_give_out_is_refused(reception, sort, cursor):
    with pytest.raises(InvalidCursor) as refused:
        payments_page(reception, PaymentFilters(sort=sort), cursor=cursor)

    assert (refused.value.status, refused.value.code, refused.value.field) == (
        400,
        "invalid_cursor",
        "after",
    )
