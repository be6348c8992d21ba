"""The audit log in the admin: searchable, never editable."""

from __future__ import annotations

from django.contrib import admin

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["time", "actor_name", "action", "cluster", "target", "outcome", "reason"]
    list_filter = ["outcome", "action", "cluster"]
    search_fields = ["actor_name", "action", "target", "reason", "message", "request_id"]
    date_hierarchy = "time"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
