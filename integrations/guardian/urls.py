"""The AI Guardian interface, mounted at /api/v1/guardian/."""

from django.urls import path

from integrations.guardian import api

urlpatterns = [
    path("signals/", api.signals_view, name="guardian-signals"),
]
