"""URL map: health probes, admin, staff portal, APIs and webhooks."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from primoro_payments import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="registration/login.html"),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("audit/", include("audit.urls")),
    path("webhooks/", include("integrations.urls")),
    path("", include("payments.urls")),
]
