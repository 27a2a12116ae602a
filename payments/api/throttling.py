"""Rate limits per patient, per staff member and per client IP, counted in the Redis cache.

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


class StaffThrottle(_Throttle):
    scope = "staff"

    def get_cache_key(self, request, view):
        user = request.user
        return self.cache_format_key(str(user.pk)) if user.is_authenticated else None
