"""Rate limits per patient, per staff member and per client IP, counted in the Redis cache.

The public /pay/ pages (payments.links) use the same throttles through
`throttle_wait`, so a link's page and its API share one budget per address.

Rates come from API_THROTTLE_RATES (settings; `API_THROTTLE_<SCOPE>` in the
environment). The client IP is REMOTE_ADDR unless API_NUM_PROXIES says how many
trusted proxies append to X-Forwarded-For: a client cannot pick its own IP by
sending that header. If the cache cannot be reached the request is let through
(and logged): a Redis outage must not stop patients paying.
"""

from __future__ import annotations

import structlog
from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

log = structlog.get_logger("payments.api.throttling")


def client_ip(request) -> str:
    proxies = settings.API_NUM_PROXIES
    remote = request.META.get("REMOTE_ADDR", "")
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < proxies:
        return remote
    return forwarded[-proxies]


class _Throttle(SimpleRateThrottle):
    scope = ""

    def get_rate(self):
        return settings.API_THROTTLE_RATES[self.scope]

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as error:
            log.warning("api_throttle_unavailable", scope=self.scope, error=type(error).__name__)
            return True

    def cache_format_key(self, ident: str) -> str:
        return f"api:throttle:{self.scope}:{ident}"


class PatientThrottle(_Throttle):
    """Every patient request, per patient."""

    scope = "patient"

    def get_cache_key(self, request, view):
        patient = getattr(request.user, "patient", None)
        return self.cache_format_key(str(patient.pk)) if patient is not None else None


class PatientPayThrottle(PatientThrottle):
    """Starting payments, per patient."""

    scope = "patient_pay"


class PayIpThrottle(_Throttle):
    """Starting payments (app and links), per client IP."""

    scope = "pay_ip"

    def get_cache_key(self, request, view):
        return self.cache_format_key(client_ip(request))


class LinkThrottle(PayIpThrottle):
    """Every pay-by-link request, per client IP (the link token is the only credential)."""

    scope = "link"


class PatientAuthFailureThrottle(_Throttle):
    """Failed patient bearer tokens, per client IP: guessing or replaying tokens is slowed.

    Only failures count (`record_failure`); once an address is over the limit,
    every patient token it sends is refused with 429 before being checked.
    """

    scope = "patient_auth_failure"

    def get_cache_key(self, request, view):
        return self.cache_format_key(client_ip(request))

    def blocked(self, request) -> bool:
        """Over the limit, without counting this request."""
        self.key = self.get_cache_key(request, None)
        try:
            history = self.cache.get(self.key, [])
        except (RedisError, OSError) as error:
            log.warning("api_throttle_unavailable", scope=self.scope, error=type(error).__name__)
            return False
        self.now = self.timer()
        self.history = [at for at in history if at > self.now - self.duration]
        return len(self.history) >= self.num_requests

    def record_failure(self, request) -> None:
        self.allow_request(request, None)


class StaffThrottle(_Throttle):
    scope = "staff"

    def get_cache_key(self, request, view):
        user = request.user
        return self.cache_format_key(str(user.pk)) if user.is_authenticated else None


def throttle_wait(request, throttle_classes) -> int | None:
    """For pages outside DRF: None if every throttle lets `request` through, else seconds to wait.

    Every throttle counts the request, as DRF's own check does.
    """
    waits = []
    for throttle_class in throttle_classes:
        throttle = throttle_class()
        if not throttle.allow_request(request, None):
            waits.append(throttle.wait() or throttle.duration)
    return int(max(waits)) + 1 if waits else None
