from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender, apps=None, **kwargs):
    """Keep the §9 role groups in step after every migrate (and after a test-database flush)."""
    from django.apps import apps as installed_apps

    from practices.roles import sync_role_groups

    sync_role_groups(apps or installed_apps)


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self):
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="payments.sync_roles")
