"""Make sure a local administrator exists, and print how to sign in (for the demo and first setup)."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the local administrator once; print the login. The password is kept in the data folder."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@localhost")

    def handle(self, *args, **opts):
        User = get_user_model()
        password_file = Path(settings.DATA_DIR) / f"{opts['username']}.password"
        user = User.objects.filter(username=opts["username"]).first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            user = user or User(username=opts["username"], email=opts["email"])
            user.is_staff = user.is_superuser = user.is_active = True
            user.set_password(password)
            user.save()
            password_file.touch(mode=0o600)
            password_file.write_text(password + "\n")
        password = password_file.read_text().strip()
        self.stdout.write(
            f"Administrator: {user.get_username()}  password: {password}  (kept in {password_file})"
        )
