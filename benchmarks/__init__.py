"""Benchmarks: run by `make bench`; each prints figures beside a baseline measured in the same run.

Importing the package sets Django up (development defaults), so benchmark
modules may import models at the top.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "primoro_payments.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()
