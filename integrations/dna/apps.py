"""The DNA Payments integration as a Django app: its settlement tables and webhook handlers."""

from django.apps import AppConfig


class DnaConfig(AppConfig):
    name = "integrations.dna"
    label = "dna"
    verbose_name = "DNA Payments"

    def ready(self):
        """Register the webhook handlers explicitly: which function processes which provider."""
        from integrations.dna.handlers import (
            handle_callback,
            handle_terminal_result,
            practice_for_event,
        )
        from integrations.models import WebhookEvent
        from integrations.webhooks import register_handler

        register_handler(
            WebhookEvent.Provider.DNA, handle_callback, practice_for=practice_for_event
        )
        register_handler(
            WebhookEvent.Provider.DNA_TERMINAL,
            handle_terminal_result,
            practice_for=practice_for_event,
        )
