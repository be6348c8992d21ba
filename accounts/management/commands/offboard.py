"""Offboard one person now: deactivate, revoke tokens, close terminals, lock their cluster accounts."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import offboarding
from accounts.models import User


class Command(BaseCommand):
    help = "Offboard the person with this e-mail address (takes effect at once; safe to run again)."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument(
            "--reason", required=True, help="Why, for the audit log (e.g. 'left the company')."
        )

    def handle(self, *args, **opts):
        people = list(User.objects.filter(email__iexact=opts["email"].strip()))
        if len(people) != 1:
            raise CommandError(f"{len(people)} people have the e-mail address {opts['email']}; expected one.")
        result = offboarding.offboard(people[0], by="manage.py offboard", reason=opts["reason"])
        for line in result.done:
            self.stdout.write(f"done: {line}")
        for line in result.problems:
            self.stdout.write(f"NOT done: {line}")
        if not result.ok:
            raise CommandError(
                f"{people[0].get_username()} is deactivated, but some clean-up failed; "
                "run manage.py reconcile_accounts once the clusters are reachable."
            )
