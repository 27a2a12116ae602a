"""Django admin for finance admins: payments and their records, read-only (they are governed).

Changes happen only through the service layer (portal, API, provider events);
here finance staff look, filter and export. Same tenant scope as every surface.
"""

from __future__ import annotations

from django.contrib import admin

from payments.models import ApprovalRequest, Payment, Refund, SplitPayment
from practices.admin import GovernedReadOnlyAdmin


class RefundInline(admin.TabularInline):
    model = Refund
    fields = ("created_at", "amount", "reason_code", "status", "requested_by_label", "approved_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(GovernedReadOnlyAdmin):
    list_display = (
        "created_at",
        "practice",
        "site",
        "method",
        "amount",
        "state",
        "target_type",
        "target_id",
        "provider_reference",
    )
    list_filter = ("state", "method", "target_type", "pms_writeback_status", "disputed")
    search_fields = ("=id", "=provider_reference", "=target_id")
    list_select_related = ("practice", "site")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = [f.name for f in Payment._meta.fields]
    inlines = [RefundInline]


@admin.register(Refund)
class RefundAdmin(GovernedReadOnlyAdmin):
    list_display = (
        "created_at",
        "practice",
        "site",
        "payment",
        "amount",
        "reason_code",
        "status",
        "requested_by_label",
    )
    list_filter = ("status", "reason_code")
    list_select_related = ("practice", "site", "payment")
    search_fields = ("=id", "=payment__id")
    readonly_fields = [f.name for f in Refund._meta.fields]


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(GovernedReadOnlyAdmin):
    list_display = (
        "created_at",
        "practice",
        "site",
        "amount",
        "reason_code",
        "status",
        "requested_by",
        "decided_by",
    )
    list_filter = ("status",)
    list_select_related = ("practice", "site", "requested_by", "decided_by")
    readonly_fields = [f.name for f in ApprovalRequest._meta.fields]


@admin.register(SplitPayment)
class SplitPaymentAdmin(GovernedReadOnlyAdmin):
    list_display = (
        "created_at",
        "practice",
        "site",
        "amount_due",
        "status",
        "target_type",
        "target_id",
    )
    list_filter = ("status",)
    list_select_related = ("practice", "site")
    readonly_fields = [f.name for f in SplitPayment._meta.fields]
