"""Admin for the outbox: read-only rows, dead letters and disabled destinations, one-click redeliver.

Visible to staff holding MANAGE_EXCEPTIONS (finance admins), each seeing only
their practices. Rows are never edited here; "Redeliver" calls
`integrations.relay.outbox_redeliver`, which checks the permission and audits.
"""

from __future__ import annotations

from django.contrib import admin, messages

from audit.actors import Actor
from integrations.destinations import disabled_destinations
from integrations.models import OutboxMessage
from integrations.pms.services import fallen_back
from integrations.relay import REDELIVERABLE, outbox_redeliver
from practices import access
from practices.admin import GovernedReadOnlyAdmin
from practices.roles import Perm


@admin.register(OutboxMessage)
class OutboxMessageAdmin(GovernedReadOnlyAdmin):
    view_permission = Perm.MANAGE_EXCEPTIONS
    scope_site_field = None
    list_display = (
        "created_at",
        "event_type",
        "destination",
        "status",
        "attempts",
        "next_attempt_at",
        "latency",
        "error_excerpt",
        "practice",
    )
    list_filter = ("status", "destination", "event_type")
    search_fields = ("=id", "=payment_id", "=dedupe_key")
    list_select_related = ("practice",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    actions = ["redeliver"]
    fields = (
        "id",
        "practice",
        "destination",
        "event_type",
        "schema_version",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "occurred_at",
        "delivered_at",
        "latency",
        "payment_id",
        "dedupe_key",
        "payload",
        "created_at",
    )
    readonly_fields = fields

    # --- who may act ---

    def has_redeliver_permission(self, request) -> bool:
        return access.has_perm(request.user, Perm.MANAGE_EXCEPTIONS)

    # --- columns ---

    @admin.display(description="written → delivered")
    def latency(self, obj: OutboxMessage) -> str:
        if not obj.delivered_at:
            return "—"
        return f"{(obj.delivered_at - obj.occurred_at).total_seconds():.2f} s"

    @admin.display(description="last error")
    def error_excerpt(self, obj: OutboxMessage) -> str:
        return obj.last_error[:120]

    # --- actions and banners ---

    @admin.action(
        description="Redeliver selected dead or disabled messages", permissions=["redeliver"]
    )
    def redeliver(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        try:
            count = outbox_redeliver(message_ids=ids, actor=Actor.staff(request.user))
        except access.NotPermitted as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        manual = len(fallen_back(ids))
        skipped = len(ids) - count - manual
        text = f"{count} message(s) queued for redelivery."
        if manual:
            text += (
                f" {manual} PMS writeback(s) not redelivered: each already became a fallback "
                "task for recording the payment in the PMS by hand. Complete (or close) that "
                "task instead; sending the writeback as well could enter the payment twice."
            )
        if skipped:
            text += (
                f" {skipped} skipped: only {' or '.join(s.label.lower() for s in REDELIVERABLE)}"
                " messages are redelivered."
            )
        self.message_user(request, text, messages.SUCCESS if count else messages.WARNING)

    def changelist_view(self, request, extra_context=None):
        disabled = disabled_destinations()
        if disabled:
            messages.warning(
                request,
                "Disabled destinations (no endpoint configured): "
                + ", ".join(disabled)
                + ". Their messages are parked as 'destination disabled' until the "
                "endpoint is configured and they are redelivered.",
            )
        return super().changelist_view(request, extra_context)
