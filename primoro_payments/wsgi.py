"""WSGI entry point (gunicorn primoro_payments.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "primoro_payments.settings")
application = get_wsgi_application()
