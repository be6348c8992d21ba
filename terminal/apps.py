from django.apps import AppConfig


class TerminalConfig(AppConfig):
    name = "terminal"
    verbose_name = "Terminals"

    def ready(self) -> None:
        # `check --deploy` warns about a Redis without a password (it carries what people type), and
        # offboarding asks how many live terminals it will close (accounts cannot import terminal).
        from terminal import checks, receivers  # noqa: F401
