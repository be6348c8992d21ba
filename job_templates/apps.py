"""The job templates app: scripts with named fields that administrators write and people fill in."""

from django.apps import AppConfig


class JobTemplatesConfig(AppConfig):
    name = "job_templates"
    verbose_name = "Job templates"
