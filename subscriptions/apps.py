"""GoCardless subscription payment status records: visibility only, never collection (§3.3, §3.4)."""

from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscription payments (GoCardless)"

    def ready(self) -> None:
        """Explicitly hand GoCardless events to our handler (no signals, no import side effects)."""
        from integrations.webhooks import register_handler
        from subscriptions.handlers import handle_gocardless_event

        register_handler("gocardless", handle_gocardless_event)
