"""Audit URLs, mounted at /audit/."""

from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("export/", views.export_download, name="export"),
]
