"""The access app: what people may do on each cluster (grants, quotas, the usage ledger, policy)."""

from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "Access: grants, quotas and budgets"

    def ready(self) -> None:
        # The demo's receivers must listen before the first person joins (accounts.demo sends).
        # Grants, quotas, groups and people changing publish the policy to enforcing head nodes.
        from access import demo, receivers  # noqa: F401
