"""Primoro Integrated Payments: Django project package (settings, urls, Celery app)."""

from primoro_payments.celery import app as celery_app

__all__ = ("celery_app",)
