"""Admin pages for the cluster registry, with a live connection test."""

from __future__ import annotations

from django.contrib import admin, messages

from audit.admin import AuditedModelAdmin
from clusters import probe
from clusters.models import Cluster


@admin.register(Cluster)
class ClusterAdmin(AuditedModelAdmin):
    list_display = ["name", "slug", "slurmrestd_url", "api_version_shown", "transport", "enabled"]
    list_filter = ["enabled", "transport"]
    search_fields = ["name", "slug", "slurmrestd_url"]
    prepopulated_fields = {"slug": ["name"]}
    actions = ["test_connection"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "enabled"]}),
        (
            "slurmrestd",
            {"fields": ["slurmrestd_url", "api_version", "has_accounting", "slurm_account", "service_user"]},
        ),
        (
            "Slurm tokens",
            {
                "fields": [
                    "jwt_key_source",
                    "jwt_key_ref",
                    "jwt_algorithm",
                    "jwt_key_id",
                    "jwt_include_ids",
                    "token_lifetime",
                    "slurm_user",
                ]
            },
        ),
        (
            "Head node",
            {
                "fields": [
                    "transport",
                    "ssm_instance_id",
                    "aws_region",
                    "ssm_role_arn",
                    "ssm_person_role_arn",
                    "slurm_bin",
                ]
            },
        ),
        (
            "Slurm enforces the policy",
            {
                "fields": [
                    "enforce_policy",
                    "policy_path",
                    "refusal_log",
                    "policy_max_age",
                    "policy_when_stale",
                ]
            },
        ),
        (
            "People, files and terminals",
            {"fields": ["allowed_script_roots", "home_root", "terminal_idle_timeout", "offboard_jobs"]},
        ),
        (
            "Shells on the console's own host",
            {"fields": ["shell_max_processes", "shell_max_memory_mb", "shell_max_cpus"]},
        ),
    ]

    @admin.display(description="API version")
    def api_version_shown(self, cluster: Cluster) -> str:
        return cluster.api_version or "auto"

    @admin.action(description="Test connection to slurmrestd")
    def test_connection(self, request, queryset) -> None:
        for cluster in queryset:
            result = probe.check(cluster)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{cluster.name}: {result.summary}", level)
