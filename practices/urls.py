"""Staff security pages (namespace `staff`), mounted at /staff/."""

from django.urls import path

from practices import views

app_name = "staff"

urlpatterns = [
    path("mfa/", views.mfa_step_up, name="mfa"),
    path(
        "patients/<uuid:patient_id>/data-export/",
        views.patient_data_export,
        name="patient_data_export",
    ),
]
