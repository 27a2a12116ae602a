from django.apps import AppConfig
from django.core import checks


def _patient_keys_configured(app_configs, **kwargs):
    """Warn at start-up when production has no keys to verify patient tokens with."""
    from django.conf import settings

    if settings.DEBUG or (settings.PATIENT_JWT_PUBLIC_KEYS and settings.PATIENT_JWT_ISSUER):
        return []
    return [
        checks.Warning(
            "PATIENT_JWT_PUBLIC_KEYS or PATIENT_JWT_ISSUER is not set: "
            "the patient API refuses every token.",
            id="payments_api.W001",
        )
    ]


class PaymentsApiConfig(AppConfig):
    name = "payments.api"
    label = "payments_api"
    verbose_name = "Payments REST API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        checks.register(_patient_keys_configured, checks.Tags.security, deploy=False)
        from payments.api import schema  # noqa: F401 - registers the OpenAPI auth extensions
