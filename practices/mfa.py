"""The step-up second factor: TOTP (RFC 6238) enrolment and verification for staff.

A practice that sets `Practice.mfa_required` wants a recent MFA step before
the virtual terminal is used or a high-value refund approval is granted
(`practices.access.require_recent_mfa`, called by the service layer). A
successful `mfa_verify` sets `StaffProfile.last_mfa_at`; the step counts for
MFA_STEP_UP_SECONDS.

Codes are six digits, 30-second steps, one step of clock drift either way. A
code (or an earlier one) that was already accepted is refused, so an
overheard code cannot be replayed. MFA_MAX_FAILURES wrong codes lock the
device for MFA_LOCKOUT_SECONDS. The shared secret is encrypted at rest and is
shown only while enrolling.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta

import pyotp
import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import EventType
from audit.services import audit_record
from practices.models import StaffProfile, TotpDevice

log = structlog.get_logger("practices.mfa")

DRIFT_STEPS = 1


class MfaError(Exception):
    """A code was refused; `code` is stable for machines, the message is for people."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Enrolment:
    """What the person needs to add the account to an authenticator app (shown once)."""

    secret: str
    provisioning_uri: str


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret)


def _profile(user) -> StaffProfile:
    return StaffProfile.objects.select_for_update().get(user_id=user.pk)


def is_enrolled(user) -> bool:
    return TotpDevice.objects.filter(user_id=user.pk, confirmed_at__isnull=False).exists()


def _enrolment(secret: str, user) -> Enrolment:
    uri = _totp(secret).provisioning_uri(name=user.get_username(), issuer_name=settings.MFA_ISSUER)
    return Enrolment(secret=secret, provisioning_uri=uri)


@transaction.atomic
def mfa_enrol_start(*, user) -> Enrolment:
    """Begin enrolment: a new secret, or the pending one (so a reloaded page shows the same).

    A confirmed device is never replaced here (`mfa_reset` does that, for admins).
    """
    _profile(user)  # staff only; also serialises with verification
    device = TotpDevice.objects.select_for_update().filter(user_id=user.pk).first()
    if device is not None and device.confirmed_at is not None:
        raise MfaError("An authenticator is already set up for this account.", code="mfa_enrolled")
    if device is None:
        device = TotpDevice.objects.create(user=user, secret=pyotp.random_base32())
    return _enrolment(device.secret, user)


@transaction.atomic
def mfa_reset(*, user) -> bool:
    """Remove a staff member's authenticator (lost phone); they enrol again at the next step-up."""
    deleted, _ = TotpDevice.objects.filter(user_id=user.pk).delete()
    StaffProfile.objects.filter(user_id=user.pk).update(last_mfa_at=None)
    log.warning("mfa_reset", user_id=user.pk, had_device=bool(deleted))
    return bool(deleted)


def _matching_step(device: TotpDevice, code: str, now) -> int | None:
    """The time step `code` belongs to (within the drift), if it is newer than the last used."""
    code = (code or "").strip().replace(" ", "")
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = _totp(device.secret)
    current = totp.timecode(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if step > device.last_used_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _check_code(device: TotpDevice, code: str, now) -> None:
    """Accept the code (recording its step) or count a failure; raises MfaError on refusal."""
    if device.locked_until and device.locked_until > now:
        raise MfaError("Too many wrong codes. Try again in a few minutes.", code="mfa_locked")
    step = _matching_step(device, code, now)
    if step is None:
        device.failed_attempts += 1
        fields = ["failed_attempts"]
        if device.failed_attempts >= settings.MFA_MAX_FAILURES:
            device.locked_until = now + timedelta(seconds=settings.MFA_LOCKOUT_SECONDS)
            device.failed_attempts = 0
            fields.append("locked_until")
        device.save(update_fields=fields)
        log.warning("mfa_code_refused", user_id=device.user_id, locked=bool(device.locked_until))
        raise MfaError(
            "That code is not right. Enter the current code from your app.", code="mfa_invalid"
        )
    device.last_used_step = step
    device.failed_attempts = 0
    device.locked_until = None
    device.save(update_fields=["last_used_step", "failed_attempts", "locked_until"])


def _verify(*, user, code: str, confirming: bool) -> StaffProfile:
    """One transaction that either accepts the code or records the failure, then answers."""
    now = timezone.now()
    refused: MfaError | None = None
    with transaction.atomic():
        profile = _profile(user)
        device = TotpDevice.objects.select_for_update().filter(user_id=user.pk).first()
        if device is None or (device.confirmed_at is None) is not confirming:
            if confirming:
                raise MfaError("Start setting up an authenticator first.", code="mfa_not_enrolling")
            raise MfaError("Set up an authenticator app first.", code="mfa_not_enrolled")
        try:
            _check_code(device, code, now)
        except MfaError as error:
            refused = error  # the failure count is saved: this block still commits
        else:
            if confirming:
                device.confirmed_at = now
                device.save(update_fields=["confirmed_at"])
                if profile.practice_id:
                    audit_record(
                        event_type=EventType.STAFF_MFA_ENROLLED,
                        practice_id=profile.practice_id,
                        actor=Actor.staff(user),
                        subject_type="staff",
                        subject_id=str(user.pk),
                        payload={"factor": "totp"},
                    )
            profile.last_mfa_at = now
            profile.save(update_fields=["last_mfa_at"])
    if refused is not None:
        raise refused
    log.info("mfa_verified", user_id=user.pk, enrolment=confirming)
    return profile


def mfa_enrol_confirm(*, user, code: str) -> StaffProfile:
    """Finish enrolment with the first code from the app; it also counts as a step-up."""
    return _verify(user=user, code=code, confirming=True)


def mfa_verify(*, user, code: str) -> StaffProfile:
    """The step-up: a valid, unused code sets `last_mfa_at` to now."""
    return _verify(user=user, code=code, confirming=False)
