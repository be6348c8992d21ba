"""Terminals in the admin: every session with why it ended (read-only), and each cluster's terminal policy."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from audit.admin import AuditedModelAdmin
from terminal.models import TerminalPolicy, TerminalSession


@admin.register(TerminalPolicy)
class TerminalPolicyAdmin(AuditedModelAdmin):
    list_display = ["cluster", "record", "max_session_minutes", "resume_minutes"]
    list_filter = ["record"]


@admin.register(TerminalSession)
class TerminalSessionAdmin(admin.ModelAdmin):
    list_display = [
        "started",
        "person_name",
        "posix_user",
        "cluster_slug",
        "transport",
        "length",
        "end_reason",
        "bytes_in",
        "bytes_out",
        "replay_link",
    ]
    list_filter = ["end_reason", "transport", "cluster_slug"]
    search_fields = ["person_name", "posix_user", "cluster_slug", "transport_session_id", "end_message"]
    date_hierarchy = "started"
    list_select_related = ["person", "cluster"]

    # The record of what happened is not for editing, not even by administrators.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TerminalSession | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: TerminalSession | None = None) -> bool:
        return False

    @admin.display(description="length")
    def length(self, obj: TerminalSession) -> str:
        if obj.duration is None:
            return "open"
        seconds = int(obj.duration.total_seconds())
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    @admin.display(description="recording")
    def replay_link(self, obj: TerminalSession) -> str:
        if not obj.recording:
            return "-"
        return format_html('<a href="{}">replay</a>', reverse("terminal:replay", args=[obj.pk]))
