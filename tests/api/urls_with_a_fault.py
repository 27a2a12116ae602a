"""The project's URLs plus a view that fails, under /api/ and outside it (to see a 500)."""

from django.urls import path

from primoro_payments.urls import urlpatterns as project


def fails(request):
    raise RuntimeError("an unexpected bug")


urlpatterns = [path("api/v1/fault/", fails), path("fault/", fails), *project]
