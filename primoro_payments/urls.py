"""URL map: health probes, admin, staff portal, APIs and webhooks."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from primoro_payments import health, metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="registration/login.html"),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("audit/", include("audit.urls")),
    path("staff/", include("practices.urls")),  # MFA step-up, subject access export
    path("webhooks/", include("integrations.urls")),
    path("api/v1/inbound/", include("integrations.inbound.urls")),  # signed module triggers
    path("api/v1/guardian/", include("integrations.guardian.urls")),  # AI Guardian, read-only
    path("", include("payments.api.urls")),  # patient, pay-by-link and tablet API; schema
    path("pay/", include("payments.links")),  # public pay-by-link pages (no login)
    path("", include("payments.urls")),
]
