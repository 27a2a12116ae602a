"""Who may change a payment-side row: one rule for every service function (§9).

Staff need the permission where the row belongs (its practice and site); named
non-staff actors (a system trigger, a provider) may act as the service allows;
anyone else is refused with `permission_denied`.
"""

from __future__ import annotations

from audit.actors import Actor
from payments.errors import PaymentError
from practices import access
from practices.roles import Perm


def authorise(
    actor: Actor, perm: Perm, row, *, refusal: str, also: tuple[str, ...] = ("system",)
) -> None:
    """Staff with `perm` at `row`'s practice and site, or an actor of a kind in `also`."""
    if actor.is_staff:
        access.require(actor.user, perm, practice_id=row.practice_id, site_id=row.site_id)
    elif actor.kind not in also:
        raise PaymentError(refusal, code="permission_denied")
