from django.apps import AppConfig


class PracticesConfig(AppConfig):
    name = "practices"
    verbose_name = "Practices and people"

    def ready(self):
        # The production settings checks (primoro_payments is not an app of its own).
        from primoro_payments import checks  # noqa: F401
