"""Print a new personal API token for one person (for automation and first setup)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import api_tokens
from accounts.models import User


class Command(BaseCommand):
    help = (
        "Issue an API token for the person with this e-mail address and print it (only the token, on stdout)."
    )

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--name", default="", help="What the token is for, e.g. 'laptop CLI'.")
        parser.add_argument(
            "--days", type=int, default=None, help=f"Lifetime in days (default {api_tokens.default_days()})."
        )

    def handle(self, *args, **opts):
        people = list(User.objects.filter(email__iexact=opts["email"].strip()))
        if not people:
            raise CommandError(f"No person has the e-mail address {opts['email']}.")
        if len(people) > 1:
            names = ", ".join(p.get_username() for p in people)
            raise CommandError(f"{len(people)} people share {opts['email']} ({names}); fix that first.")
        try:
            token, raw = api_tokens.issue(
                people[0], name=opts["name"] or "issued by manage.py", days=opts["days"]
            )
        except ValueError as e:
            raise CommandError(str(e)) from None
        # Only the token on stdout, so `TOKEN=$(manage.py issue_api_token …)` works.
        self.stdout.write(raw)
        self.stderr.write(
            f"{token.prefix}… for {people[0].get_username()}, expires {token.expires:%Y-%m-%d}."
        )
