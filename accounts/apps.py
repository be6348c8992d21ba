from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "People and accounts"

    def ready(self) -> None:
        # The sign-in audit receivers must be connected before the first login, not when urls load.
        from accounts import adapter  # noqa: F401
