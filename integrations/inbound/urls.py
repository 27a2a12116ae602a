"""Inbound trigger endpoints, mounted at /api/v1/inbound/."""

from django.urls import path

from integrations.inbound import views

urlpatterns = [
    path("<str:module>/<str:event_type>/", views.receive, name="inbound-event"),
]
