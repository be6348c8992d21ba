"""The audit app: the append-only log every other app writes to, and its exports."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        # Connected at start, so no admin change happens before the receiver listens.
        from audit import receivers  # noqa: F401
