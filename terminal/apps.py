from django.apps import AppConfig


class TerminalConfig(AppConfig):
    name = "terminal"
    verbose_name = "Terminals"

    def ready(self) -> None:
        # `check --deploy` warns about a Redis without a password (it carries what people type).
        from terminal import checks  # noqa: F401
