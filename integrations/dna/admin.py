"""Admin pages for DNA: settlement exceptions and webhook events needing attention (read-only)."""

from __future__ import annotations

from django.contrib import admin

from integrations.admin import WebhookEventAdmin
from integrations.dna.models import DnaWebhookEvent, SettlementBatch, SettlementItem
from practices.admin import GovernedReadOnlyAdmin
from practices.roles import Perm


@admin.register(SettlementItem)
class SettlementItemAdmin(GovernedReadOnlyAdmin):
    """Every settled item; filter on status "exception" for what needs attention."""

    view_permission = Perm.MANAGE_EXCEPTIONS
    list_display = (
        "created_at",
        "status",
        "problem",
        "kind",
        "amount",
        "fee",
        "currency",
        "transaction_id",
        "invoice_id",
        "payment",
        "practice",
        "detail",
    )
    list_filter = ("status", "problem", "kind")
    search_fields = ("=transaction_id", "=invoice_id", "=batch__reference")
    list_select_related = ("batch", "practice", "payment")
    ordering = ("-created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("batch")


@admin.register(SettlementBatch)
class SettlementBatchAdmin(GovernedReadOnlyAdmin):
    """Batches span practices: only platform superusers see them whole."""

    view_permission = Perm.MANAGE_EXCEPTIONS
    list_display = ("reference", "settled_at", "currency", "total_sales", "total_net", "fetched_at")
    search_fields = ("=reference",)

    def has_module_permission(self, request) -> bool:
        return request.user.is_superuser

    def get_queryset(self, request):
        queryset = admin.ModelAdmin.get_queryset(self, request)
        return queryset if request.user.is_superuser else queryset.none()


@admin.register(DnaWebhookEvent)
class DnaWebhookEventAdmin(WebhookEventAdmin):
    """The provider events page narrowed to DNA's callbacks and terminal results (card fields
    were never stored); parked ones can be reprocessed."""

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(
                provider__in=[DnaWebhookEvent.Provider.DNA, DnaWebhookEvent.Provider.DNA_TERMINAL]
            )
        )
