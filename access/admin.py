"""Admin pages for grants, quotas (with current use, open reservations and history) and the usage ledger."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from access import ledger
from access.models import Grant, Quota, QuotaChange, Usage
from access.quota import QuotaStatus, charged_to, date_words, status_of
from accounts.admin import ask_first, confirmed
from audit.admin import AuditedModelAdmin
from audit.log import record
from ui.templatetags.ui import figure, when


@admin.register(Grant)
class GrantAdmin(AuditedModelAdmin):
    list_display = ["holder", "cluster", "partitions_shown", "terminal", "note", "updated"]
    list_filter = ["cluster", "terminal", "all_partitions"]
    search_fields = ["group__name", "user__username", "user__email", "partitions", "note"]
    autocomplete_fields = ["group", "user"]
    fields = [
        "cluster",
        "group",
        "user",
        "all_partitions",
        "partitions",
        "accounts",
        "qos",
        "terminal",
        "note",
    ]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("cluster", "group", "user")

    @admin.display(description="for", ordering="group__name")
    def holder(self, grant: Grant) -> str:
        return grant.holder_name

    @admin.display(description="partitions")
    def partitions_shown(self, grant: Grant) -> str:
        if grant.all_partitions:
            return "all"
        return ", ".join(grant.partition_names) or "none"


class QuotaChangeInline(admin.TabularInline):
    model = QuotaChange
    fields = ["time", "changed_by_name", "kind", "what_changed"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "history"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="before → after")
    def what_changed(self, change: QuotaChange) -> str:
        return describe_change(change)


@admin.register(Quota)
class QuotaAdmin(AuditedModelAdmin):
    list_display = [
        "holder",
        "cluster",
        "period",
        "gpu_hours_shown",
        "cpu_hours_shown",
        "jobs_shown",
        "updated",
    ]
    list_filter = ["cluster", "period"]
    search_fields = ["group__name", "user__username", "user__email", "note"]
    autocomplete_fields = ["group", "user"]
    fieldsets = [
        (None, {"fields": ["cluster", "group", "user", "note"]}),
        ("Budgets", {"fields": ["period", "period_anchor", "gpu_hours", "cpu_hours"]}),
        ("Jobs at once", {"fields": ["max_running_jobs", "max_queued_jobs"]}),
        (
            "Per job",
            {
                "fields": [
                    "max_nodes_per_job",
                    "max_cpus_per_job",
                    "max_gpus_per_job",
                    "max_memory_per_job",
                    "max_walltime",
                ]
            },
        ),
        ("Now", {"fields": ["current_use", "open_reservations"]}),
    ]
    readonly_fields = ["current_use", "open_reservations"]
    inlines = [QuotaChangeInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("cluster", "group", "user")

    def save_model(self, request: HttpRequest, obj: Quota, form: Any, change: bool) -> None:
        obj.save(changed_by=request.user)

    def delete_model(self, request: HttpRequest, obj: Quota) -> None:
        obj.delete(changed_by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        # One by one, so each deletion is kept in the quota history.
        for quota in queryset:
            quota.delete(changed_by=request.user)

    @admin.display(description="for", ordering="group__name")
    def holder(self, quota: Quota) -> str:
        return quota.holder_name

    @admin.display(description="GPU-hours")
    def gpu_hours_shown(self, quota: Quota) -> str:
        s = _status(quota)
        return _budget(s.gpu_hours_limit, s.gpu_hours_used, s.gpu_hours_reserved, s.gpu_hours_left)

    @admin.display(description="CPU-hours")
    def cpu_hours_shown(self, quota: Quota) -> str:
        s = _status(quota)
        return _budget(s.cpu_hours_limit, s.cpu_hours_used, s.cpu_hours_reserved, s.cpu_hours_left)

    @admin.display(description="jobs now")
    def jobs_shown(self, quota: Quota) -> str:
        s = _status(quota)
        running = f"{s.running_jobs}" + (f"/{s.max_running_jobs}" if s.max_running_jobs is not None else "")
        queued = f"{s.queued_jobs}" + (f"/{s.max_queued_jobs}" if s.max_queued_jobs is not None else "")
        return f"{running} running, {queued} queued"

    @admin.display(description="current period")
    def current_use(self, quota: Quota) -> str:
        if quota.pk is None:
            return "-"
        s = _status(quota)
        return format_html(
            "{} to {} (renews on {})<br>GPU-hours: {}<br>CPU-hours: {}<br>Jobs: {}",
            date_words(s.period_start),
            date_words(s.renews),
            s.renews_words,
            self.gpu_hours_shown(quota),
            self.cpu_hours_shown(quota),
            self.jobs_shown(quota),
        )

    @admin.display(description="open reservations")
    def open_reservations(self, quota: Quota) -> str:
        if quota.pk is None:
            return "-"
        rows = charged_to(quota).filter(state__in=Usage.OPEN).order_by("created")[:200]
        if not rows:
            return "None."
        return format_html(
            "<table><tr><th>person</th><th>job</th><th>state</th><th>partition</th>"
            "<th>GPU-hours</th><th>CPU-hours</th><th>since</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        u.username,
                        u.job_id or "(submitting)",
                        u.get_state_display(),
                        u.partition,
                        figure(u.reserved_gpu_hours),
                        figure(u.reserved_cpu_hours),
                        when(u.created),
                    )
                    for u in rows
                ),
            ),
        )


@admin.register(QuotaChange)
class QuotaChangeAdmin(admin.ModelAdmin):
    list_display = ["time", "quota_label", "kind", "changed_by_name", "what_changed"]
    list_filter = ["kind"]
    search_fields = ["quota_label", "changed_by_name"]
    date_hierarchy = "time"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="before → after")
    def what_changed(self, change: QuotaChange) -> str:
        return describe_change(change)


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    list_display = [
        "created",
        "username",
        "cluster",
        "job_id",
        "origin",
        "state",
        "partition",
        "gpus",
        "cpus",
        "time_limit",
        "reserved_gpu_hours_shown",
        "used_gpu_hours_shown",
        "used_cpu_hours_shown",
    ]
    list_filter = ["state", "origin", "cluster"]
    search_fields = ["username", "=job_id", "partition"]
    date_hierarchy = "created"
    actions = ["release_selected"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Hours as every page writes a figure (0.00167, not 0.0016666666666666668).
        return [f"{name}_shown" if name in HOURS else name for name in _ledger_fields()]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The ledger changes only through access.ledger, so its totals stay explainable.
        return self.get_fields(request, obj)

    @admin.display(description="reserved GPU-hours", ordering="reserved_gpu_hours")
    def reserved_gpu_hours_shown(self, entry: Usage) -> str:
        return figure(entry.reserved_gpu_hours)

    @admin.display(description="reserved CPU-hours", ordering="reserved_cpu_hours")
    def reserved_cpu_hours_shown(self, entry: Usage) -> str:
        return figure(entry.reserved_cpu_hours)

    @admin.display(description="used GPU-hours", ordering="used_gpu_hours")
    def used_gpu_hours_shown(self, entry: Usage) -> str:
        return figure(entry.used_gpu_hours)

    @admin.display(description="used CPU-hours", ordering="used_cpu_hours")
    def used_cpu_hours_shown(self, entry: Usage) -> str:
        return figure(entry.used_cpu_hours)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Release selected reservations (queued jobs only)", permissions=["change"])
    def release_selected(self, request: HttpRequest, queryset: Any) -> TemplateResponse | None:
        if not confirmed(request):
            return self._ask_before_releasing(request, queryset)
        reason = f"released in the admin by {request.user.get_username()}"
        released = 0
        for entry in queryset.filter(state=Usage.State.QUEUED).select_related("cluster"):
            ledger.release(entry.pk, reason)
            job = f"job {entry.job_id}" if entry.job_id else "never submitted"
            released += 1
            record(
                "ledger.released",
                actor=request.user,
                cluster=entry.cluster,
                target=f"reservation {entry.pk}",
                message=f"Reservation {entry.pk} of {entry.username} ({job}) {reason}.",
                request=request,
                details={"reservation_id": entry.pk, "job_id": entry.job_id},
            )
        self.message_user(
            request,
            f"{released} reservation(s) released; running and ended jobs are settled by the sync loop.",
            messages.SUCCESS,
        )

    def _ask_before_releasing(self, request: HttpRequest, queryset: Any) -> TemplateResponse:
        queued = list(queryset.filter(state=Usage.State.QUEUED).select_related("cluster").order_by("pk"))
        others = queryset.exclude(state=Usage.State.QUEUED).count()
        items = []
        for entry in queued:
            job = f"job {entry.job_id}" if entry.job_id else "never submitted"
            items.append(
                {
                    "name": f"Reservation {entry.pk} of {entry.username} on {entry.cluster.slug} ({job})",
                    "lines": [
                        f"{figure(entry.reserved_gpu_hours)} GPU-hours and "
                        f"{figure(entry.reserved_cpu_hours)} CPU-hours no longer held against the budget.",
                        "The entry stays in the ledger, marked released; this cannot be undone.",
                    ],
                }
            )
        notes = (
            [
                f"{others} selected reservation(s) are not for queued jobs and stay as they are: the sync "
                "loop settles them."
            ]
            if others
            else []
        )
        return ask_first(
            self,
            request,
            queryset,
            action="release_selected",
            title=f"Release {len(queued)} reservation(s)?",
            intro="Releasing hands a stuck reservation's hours back to the quotas it was charged to. "
            "The audit log keeps who did it.",
            items=items,
            notes=notes,
            confirm_label="Yes, release",
        )


HOURS = {"reserved_gpu_hours", "reserved_cpu_hours", "used_gpu_hours", "used_cpu_hours"}


def _ledger_fields() -> list[str]:
    return [f.name for f in Usage._meta.get_fields() if f.concrete and f.name != "id"]


def describe_change(change: QuotaChange) -> str:
    """'gpu_hours: 10.0 → 20.0; max_queued_jobs: none → 5'."""
    if change.kind == QuotaChange.Kind.DELETED:
        return "deleted"
    parts = [f"{name}: {_value(before)} → {_value(after)}" for name, before, after in change.differences]
    return "; ".join(parts) or "no change"


def _value(value: Any) -> str:
    return "none" if value is None or value == "" else str(value)


def _status(quota: Quota) -> QuotaStatus:
    # Several columns of one row read the same status: compute it once per row.
    cached = getattr(quota, "_status_cache", None)
    if cached is None:
        cached = quota._status_cache = status_of(quota)
    return cached


def _budget(limit: float | None, used: float, reserved: float, left: float | None) -> str:
    if limit is None:
        return f"{figure(used)} used, {figure(reserved)} reserved (no limit)"
    return f"{figure(used)} used + {figure(reserved)} reserved of {figure(limit)}: {figure(left)} left"
