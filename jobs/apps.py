from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Answers offboarding's question of what it will cancel (accounts cannot import jobs).
        from jobs import receivers  # noqa: F401
