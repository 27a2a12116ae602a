"""Who may see and do what: tenant scope and §9 permissions, in one place.

Every surface (portal, REST API, admin, services) asks these functions; none
re-implements the rules. A lookup outside the actor's scope behaves as if the
row did not exist (404), so ids cannot be probed across practices.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.utils import timezone

from practices.models import Practice, Site, StaffProfile
from practices.roles import Perm


class NotPermitted(PermissionDenied):
    """The actor is known but lacks the permission for this action."""

    def __init__(self, perm: Perm, message: str | None = None):
        self.perm = perm
        self.code = "permission_denied"
        super().__init__(
            message or f"You do not have permission to {perm.value.replace('_', ' ')}."
        )


def _profile(user):
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    return getattr(user, "staff_profile", None)


def practice_ids_for(user) -> frozenset:
    """The practices a staff user may see: their own, or every one of their group."""
    cached = getattr(user, "_primoro_practice_ids", None)
    if cached is not None:
        return cached
    profile = _profile(user)
    if profile is None:
        ids = frozenset()
    elif profile.practice_id:
        ids = frozenset({profile.practice_id})
    else:
        ids = frozenset(
            Practice.objects.filter(group_id=profile.practice_group_id).values_list("id", flat=True)
        )
    user._primoro_practice_ids = ids
    return ids


def site_ids_for(user) -> frozenset:
    """The sites a staff user may see."""
    cached = getattr(user, "_primoro_site_ids", None)
    if cached is not None:
        return cached
    profile = _profile(user)
    if profile is None:
        ids = frozenset()
    elif profile.practice_group_id or profile.all_sites:
        ids = frozenset(
            Site.objects.filter(practice_id__in=practice_ids_for(user)).values_list("id", flat=True)
        )
    else:
        ids = frozenset(profile.sites.values_list("id", flat=True))
    user._primoro_site_ids = ids
    return ids


def scope(queryset: QuerySet, user, *, practice_field="practice", site_field: str | None = "site"):
    """Limit a queryset to the rows the user may see (practice, and site where rows have one)."""
    condition = Q(**{f"{practice_field}_id__in": practice_ids_for(user)})
    if site_field:
        condition &= Q(**{f"{site_field}_id__in": site_ids_for(user)}) | Q(
            **{f"{site_field}_id__isnull": True}
        )
    return queryset.filter(condition)


def can_see(user, *, practice_id, site_id=None) -> bool:
    if practice_id not in practice_ids_for(user):
        return False
    return site_id is None or site_id in site_ids_for(user)


def has_perm(user, perm: Perm) -> bool:
    return _profile(user) is not None and user.has_perm(perm.qualified)


def require(user, perm: Perm, *, practice_id, site_id=None) -> None:
    """Raise unless the user holds `perm` and may act at this practice (and site)."""
    if not can_see(user, practice_id=practice_id, site_id=site_id):
        raise NotPermitted(perm, "This practice or site is outside your access.")
    if not has_perm(user, perm):
        raise NotPermitted(perm)


class MfaRequired(PermissionDenied):
    """The practice wants a recent second-factor step before this action (§9, docs/security.md).

    Surfaces send the person to the step-up page (portal) or answer 403 with
    code `mfa_required` (API); nothing was changed.
    """

    code = "mfa_required"
    status = 403

    def __init__(self, message: str | None = None):
        self.message = message or (
            "Confirm it is you with your authenticator code first (this practice requires it)."
        )
        super().__init__(self.message)

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


def has_recent_mfa(user, *, now=None) -> bool:
    """Whether the user completed an MFA step within MFA_STEP_UP_SECONDS (read fresh)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    last = (
        StaffProfile.objects.filter(user_id=user.pk).values_list("last_mfa_at", flat=True).first()
    )
    if last is None:
        return False
    now = now or timezone.now()
    return now - last <= timedelta(seconds=settings.MFA_STEP_UP_SECONDS) and last <= now


def require_recent_mfa(user, practice: Practice) -> None:
    """Raise MfaRequired if `practice` requires MFA and the user has no recent step.

    Called by the service layer for the virtual terminal and for granting a
    high-value refund approval, so every surface enforces it.
    """
    if practice.mfa_required and not has_recent_mfa(user):
        raise MfaRequired()
