"""Admin for tenancy records, and the base every governed admin page builds on."""

from __future__ import annotations

from django.contrib import admin

from practices import access
from practices.models import Patient, Practice, PracticeGroup, Site, StaffProfile
from practices.roles import Perm


class GovernedReadOnlyAdmin(admin.ModelAdmin):
    """Governed records: seen by holders of `view_permission`, only in their practices, never edited.

    The same §9 rules as the portal and the API (practices.access), so the
    admin is not a back door. Subclasses set `view_permission` and, where rows
    have no site, `scope_site_field = None`.
    """

    view_permission: Perm = Perm.VIEW_PAYMENTS
    scope_site_field: str | None = "site"

    def has_module_permission(self, request) -> bool:
        return request.user.is_superuser or access.has_perm(request.user, self.view_permission)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return access.scope(queryset, request.user, site_field=self.scope_site_field)


@admin.register(PracticeGroup)
class PracticeGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)


class SiteInline(admin.TabularInline):
    model = Site
    extra = 0


@admin.register(Practice)
class PracticeAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "group",
        "refund_approval_threshold",
        "pms_writeback_mode",
        "virtual_terminal_enabled",
    )
    list_filter = ("group", "pms_writeback_mode")
    search_fields = ("name",)
    inlines = [SiteInline]


@admin.register(StaffProfile)
class StaffProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "practice", "practice_group", "all_sites")
    list_filter = ("practice", "practice_group")
    filter_horizontal = ("sites",)


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("display_name", "practice", "kind", "pms_patient_id")
    list_filter = ("practice", "kind")
    search_fields = ("=pms_patient_id", "display_name")
