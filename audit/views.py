"""The staff download of the audit log (GET /audit/export/?format=csv|jsonl&...).

Thin: it checks the §9 permission, narrows the filters to the practices (and
sites) the user may see, records the export, and streams `audit.export`'s
chunks. A practice or site outside the user's scope answers 404, as if it did
not exist. Streams in constant memory under WSGI (gunicorn sync workers).
"""

from __future__ import annotations

from dataclasses import replace

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit.actors import Actor
from audit.export import (
    ExportFilterError,
    ExportFilters,
    ExportFormat,
    audit_export_record,
    content_type,
    export_chunks,
    export_filename,
    filtered_events,
)
from practices import access
from practices.roles import Perm


def _error(status: int, code: str, message: str, field: str | None = None) -> JsonResponse:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    return JsonResponse(body, status=status)


@login_required
@require_GET
def export_download(request):
    user = request.user
    if not access.has_perm(user, Perm.VIEW_AUDIT_LOG):
        return _error(403, "permission_denied", "You do not have permission to view the audit log.")
    try:
        fmt = ExportFormat(request.GET.get("format", ""))
    except ValueError:
        return _error(400, "invalid_filter", "format must be 'csv' or 'jsonl'.", "format")
    try:
        filters = ExportFilters.from_query(dict(request.GET.lists()))
    except ExportFilterError as exc:
        return JsonResponse(exc.as_dict(), status=400)

    practices = access.practice_ids_for(user)
    sites = access.site_ids_for(user)
    if not set(filters.practice_ids) <= practices:
        return _error(404, "not_found", "No such practice.", "practice")
    if filters.site_id and filters.site_id not in sites:
        return _error(404, "not_found", "No such site.", "site")
    if not filters.practice_ids:
        filters = replace(filters, practice_ids=tuple(sorted(practices)))
    events = filtered_events(filters).filter(
        Q(practice_id__in=practices), Q(site_id__in=sites) | Q(site_id__isnull=True)
    )
    audit_export_record(actor=Actor.staff(user), filters=filters, fmt=fmt)

    response = StreamingHttpResponse(export_chunks(events, fmt=fmt), content_type=content_type(fmt))
    name = export_filename(fmt, now=timezone.now())
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response
