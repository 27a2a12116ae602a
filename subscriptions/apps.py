"""GoCardless subscription payment status records: visibility only, never collection (§3.3, §3.4)."""

from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscription payments (GoCardless)"

    def ready(self) -> None:
        """Explicitly hand GoCardless events to our handler (no signals, no import side effects)."""
        from integrations.webhooks import register_handler
        from subscriptions.handlers import handle_gocardless_event, practice_for_event

        register_handler("gocardless", handle_gocardless_event, practice_for=practice_for_event)
        _register_guardian_source()


def _register_guardian_source() -> None:
    """AI Guardian reads the current §3.3 state of every subscription payment and mandate."""
    from integrations.guardian.signals import CurrentStateSource, register_signal_source
    from subscriptions.models import SubscriptionMandate, SubscriptionPayment

    register_signal_source(
        CurrentStateSource(
            name="subscription_payment.state",
            queryset=SubscriptionPayment.objects.all,
            subject_type="subscription_payment",
            provider_reference_field="gocardless_payment_id",
            mandate_reference_field="mandate_reference",
        )
    )
    register_signal_source(
        CurrentStateSource(
            name="subscription_mandate.state",
            queryset=SubscriptionMandate.objects.all,
            subject_type="subscription_mandate",
            amount_field=None,
            currency_field=None,
            provider_reference_field="gocardless_mandate_id",
            mandate_reference_field="mandate_reference",
        )
    )
