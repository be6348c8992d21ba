from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "clusters"
    verbose_name = "Clusters"

    def ready(self) -> None:
        # Importing it quietens the loggers that would write AWS secrets at DEBUG, in every process
        # (web workers, the shell keeper, sync) before any boto3 call, not only where a role is assumed.
        from clusters import aws  # noqa: F401
