"""The audit log in the admin: searchable, exportable, never editable; and a base for audited admin pages."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import DELETION, LogEntry
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from audit import export
from audit.log import record
from audit.models import AuditEvent


class AuditedModelAdmin(admin.ModelAdmin):
    """An admin whose bulk deletions are audited one object at a time.

    Single changes reach the audit log through the admin's own LogEntry (audit.receivers);
    Django writes the entries of a bulk "delete selected" with bulk_create, which sends
    no signal, so here they are written one by one instead.
    """

    def log_deletions(self, request: HttpRequest, queryset: Any) -> list[LogEntry]:
        return [
            LogEntry.objects.log_actions(
                user_id=request.user.pk, queryset=[obj], action_flag=DELETION, single_object=True
            )
            for obj in queryset
        ]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["time", "actor_name", "action", "cluster", "target", "outcome", "reason", "short_message"]
    list_filter = ["outcome", "action", "cluster", "reason"]
    search_fields = [
        "actor_name",
        "actor__email",
        "action",
        "cluster",
        "target",
        "reason",
        "message",
        "request_id",
        "client_address",
    ]
    date_hierarchy = "time"
    fields = [
        "time",
        "actor",
        "actor_name",
        "action",
        "cluster",
        "target",
        "outcome",
        "reason",
        "message",
        "client_address",
        "request_id",
        "details_shown",
    ]
    readonly_fields = fields
    actions = ["export_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="message")
    def short_message(self, event: AuditEvent) -> str:
        return event.message[:100] + ("…" if len(event.message) > 100 else "")

    @admin.display(description="details")
    def details_shown(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.details, indent=2, sort_keys=True, default=str))

    @admin.action(description="Download selected as JSON lines", permissions=["view"])
    def export_selected(self, request: HttpRequest, queryset: Any) -> HttpResponse:
        response = HttpResponse(content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="clusterra-audit.jsonl"'
        count = export.write_lines(queryset.order_by("time", "id"), response)
        # Who took a copy of the audit log is itself worth knowing.
        record(
            "audit.exported",
            actor=request.user,
            target="admin download",
            message=f"Downloaded {count} audit events from the admin.",
            request=request,
            details={"count": count},
        )
        return response
