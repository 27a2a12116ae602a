"""Admin for the outbox and stored provider events: read-only rows, one-click retries.

Visible to staff holding MANAGE_EXCEPTIONS (finance admins), each seeing only
their practices. Rows are never edited here. "Redeliver" (outbox) calls
`integrations.relay.outbox_redeliver`; "Reprocess" (provider events) calls
`integrations.webhooks.webhook_event_reprocess`; both check the permission and audit.
"""

from __future__ import annotations

from django.contrib import admin, messages

from audit.actors import Actor
from integrations.destinations import disabled_destinations
from integrations.models import OutboxMessage, WebhookEvent
from integrations.pms.services import fallen_back
from integrations.relay import REDELIVERABLE, outbox_redeliver
from integrations.webhooks import REPROCESSABLE, webhook_event_reprocess
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


class ReprocessWebhookEventsMixin:
    """The "Reprocess" action for stored provider events (parked, or failing and waiting)."""

    actions = ["reprocess"]

    def has_reprocess_permission(self, request) -> bool:
        return request.user.is_superuser or access.has_perm(request.user, Perm.MANAGE_EXCEPTIONS)

    @admin.action(
        description="Reprocess selected parked or failing events", permissions=["reprocess"]
    )
    def reprocess(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        try:
            count = webhook_event_reprocess(event_ids=ids, actor=Actor.staff(request.user))
        except access.NotPermitted as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        text = f"{count} event(s) queued for processing."
        if len(ids) > count:
            text += (
                f" {len(ids) - count} skipped: only "
                f"{' or '.join(s.label.lower() for s in REPROCESSABLE)} events are reprocessed."
            )
        self.message_user(request, text, messages.SUCCESS if count else messages.WARNING)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReprocessWebhookEventsMixin, GovernedReadOnlyAdmin):
    """Every provider's stored events; filter on status "parked" for those given up on.

    Events no practice is known for are seen by platform superusers only.
    """

    view_permission = Perm.MANAGE_EXCEPTIONS
    scope_site_field = None
    list_display = (
        "received_at",
        "provider",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "resource_ref",
        "error_excerpt",
        "practice",
    )
    list_filter = ("status", "provider", "event_type")
    search_fields = ("=event_id", "=resource_ref", "=payment_id")
    list_select_related = ("practice",)
    ordering = ("-received_at",)
    fields = (
        "id",
        "provider",
        "event_id",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "resource_ref",
        "practice",
        "payment_id",
        "received_at",
        "processed_at",
        "body",
    )
    readonly_fields = fields

    @admin.display(description="last error")
    def error_excerpt(self, obj: WebhookEvent) -> str:
        return obj.last_error[:120]
