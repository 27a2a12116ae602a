"""Read-only admin for subscription status: governed records, scoped to the viewer's practices.

Nothing here can change a record or reach GoCardless: no add, change, delete
or actions. Unmatched GoCardless events are listed too, so they can be chased
rather than dropped; having no known practice, they are shown to platform
superusers only (showing them to one practice could leak another's).
"""

from __future__ import annotations

from django.contrib import admin

from integrations.models import WebhookEvent
from practices.admin import GovernedReadOnlyAdmin
from practices.roles import Perm
from subscriptions.models import SubscriptionMandate, SubscriptionPayment, UnmatchedGoCardlessEvent


@admin.register(SubscriptionPayment)
class SubscriptionPaymentAdmin(GovernedReadOnlyAdmin):
    view_permission = Perm.VIEW_PAYMENTS
    list_display = (
        "updated_at",
        "patient",
        "module",
        "state",
        "amount",
        "currency",
        "mandate_reference",
        "gocardless_status",
        "charge_date",
        "fee_total",
        "practice",
    )
    list_filter = ("module", "state", "gocardless_status")
    search_fields = ("=gocardless_payment_id", "=mandate_reference", "=subscription_id")
    list_select_related = ("patient", "practice")
    date_hierarchy = "updated_at"
    actions = None
    fields = (
        "id",
        "practice",
        "site",
        "patient",
        "module",
        "subscription_id",
        "state",
        "gocardless_status",
        "mandate_reference",
        "mandate",
        "gocardless_payment_id",
        "gocardless_subscription_id",
        "amount",
        "currency",
        "charge_date",
        "failure_cause",
        "failure_reason_code",
        "failure_description",
        "payout_id",
        "fee_currency",
        "fee_gocardless",
        "fee_app",
        "fee_surcharge",
        "fee_tax",
        "fee_total",
        "fees_minor",
        "fees_recorded_at",
        "pms_writeback_queued_at",
        "last_event_id",
        "last_event_created_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields


@admin.register(SubscriptionMandate)
class SubscriptionMandateAdmin(GovernedReadOnlyAdmin):
    view_permission = Perm.VIEW_PAYMENTS
    list_display = (
        "updated_at",
        "patient",
        "module",
        "state",
        "mandate_reference",
        "gocardless_status",
        "practice",
    )
    list_filter = ("module", "state")
    search_fields = ("=gocardless_mandate_id", "=mandate_reference")
    list_select_related = ("patient", "practice")
    actions = None
    fields = (
        "id",
        "practice",
        "site",
        "patient",
        "module",
        "state",
        "gocardless_status",
        "mandate_reference",
        "gocardless_mandate_id",
        "last_event_id",
        "last_event_created_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields


@admin.register(UnmatchedGoCardlessEvent)
class UnmatchedGoCardlessEventAdmin(admin.ModelAdmin):
    """Events no practice can be named for: platform support chases them with GoCardless."""

    list_display = ("received_at", "event_type", "event_id", "resource_ref", "last_error")
    search_fields = ("=event_id", "=resource_ref")
    actions = None
    fields = ("event_id", "event_type", "resource_ref", "status", "last_error", "body")
    readonly_fields = fields

    def has_module_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(provider=WebhookEvent.Provider.GOCARDLESS, status=WebhookEvent.Status.UNMATCHED)
        )
