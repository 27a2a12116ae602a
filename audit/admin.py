"""Admin for the audit log: read-only for everyone, scoped to the user's practices.

Visible to superusers and to staff holding VIEW_AUDIT_LOG (compliance and
finance admins). Nobody can add, change or delete an event here (the database
refuses it anyway). The "Export" actions hand over to the staff download,
which checks scope again and records the export.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpResponseRedirect
from django.urls import reverse

from audit.export import ExportFormat
from audit.models import AuditEvent
from practices import access
from practices.admin import GovernedReadOnlyAdmin
from practices.models import Practice
from practices.roles import Perm


class PracticeFilter(admin.SimpleListFilter):
    """Only the practices the user may see (the stock related filter would list them all)."""

    title = "practice"
    parameter_name = "practice"

    def lookups(self, request, model_admin):
        practices = Practice.objects.order_by("name")
        if not request.user.is_superuser:
            practices = practices.filter(id__in=access.practice_ids_for(request.user))
        return [(str(p.id), p.name) for p in practices]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return queryset.filter(practice_id=uuid.UUID(self.value()))
        except ValueError:
            return queryset.none()


@admin.register(AuditEvent)
class AuditEventAdmin(GovernedReadOnlyAdmin):
    view_permission = Perm.VIEW_AUDIT_LOG
    list_display = (
        "occurred_at",
        "practice",
        "seq",
        "event_type",
        "actor",
        "payment_id",
        "amount",
        "from_state",
        "to_state",
        "provider_reference",
    )
    list_filter = (PracticeFilter, "event_type", "occurred_at")
    list_select_related = ("practice",)
    search_fields = ("=payment_id", "=provider_reference")
    search_help_text = "An exact payment id or provider reference."
    ordering = ("-occurred_at",)
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # no second COUNT(*) over a very large table
    actions = ["export_csv", "export_jsonl"]
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def get_search_results(self, request, queryset, search_term):
        """A UUID term matches payment_id, anything else provider_reference (no invalid-UUID error)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(payment_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(provider_reference=term), False

    @admin.display(description="actor")
    def actor(self, obj: AuditEvent) -> str:
        return f"{obj.actor_kind}:{obj.actor_id} ({obj.actor_label})"

    # --- export: hand over to the staff download ---

    def _export(self, queryset, fmt: ExportFormat):
        selected = queryset.order_by().values_list("practice_id", flat=True).distinct()
        practices = sorted(str(p) for p in selected)
        query = urlencode([("format", fmt.value), *(("practice", p) for p in practices)])
        return HttpResponseRedirect(f"{reverse('audit:export')}?{query}")

    @admin.action(description="Export the selected events' practices (CSV)", permissions=["view"])
    def export_csv(self, request, queryset):
        return self._export(queryset, ExportFormat.CSV)

    @admin.action(
        description="Export the selected events' practices (JSON Lines)", permissions=["view"]
    )
    def export_jsonl(self, request, queryset):
        return self._export(queryset, ExportFormat.JSONL)
