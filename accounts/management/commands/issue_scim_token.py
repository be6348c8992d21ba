"""Print a new SCIM bearer token for one IdP connection (for Okta's or Entra ID's provisioning setup)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import scim


class Command(BaseCommand):
    help = "Issue a SCIM token for an IdP connection and print it (only the token, on stdout)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Which IdP connection it is for, e.g. 'Okta production'.")

    def handle(self, *args, **opts):
        name = opts["name"].strip()
        if not name:
            raise CommandError("Give the connection a name.")
        self.stdout.write(scim.issue_token(name[:100]))
        self.stderr.write(f"Base URL for the IdP: https://<console>/scim/v2/  (token for {name}).")
