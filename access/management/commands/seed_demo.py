"""Set up the demo's access on a cluster: the `demo` group, its grant and quota (idempotent)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access import demo
from clusters.models import Cluster


class Command(BaseCommand):
    help = (
        "Create the demo group with a grant (the demo partition and the terminal) and a quota on a cluster, "
        "from the CLUSTERRA_DEMO_* settings. Safe to run again: rows already there are kept unless --reset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--cluster",
            default=settings.CLUSTERRA_DEMO_CLUSTER or None,
            help="The demo cluster's slug (default: CLUSTERRA_DEMO_CLUSTER).",
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Rewrite the demo group's grant and quota to the settings if they were edited.",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        slug = opts["cluster"]
        if not slug:
            raise CommandError("Name the demo cluster: --cluster <slug> (or set CLUSTERRA_DEMO_CLUSTER).")
        cluster = Cluster.objects.filter(slug=slug).first()
        if cluster is None:
            raise CommandError(f"No cluster {slug!r} is registered; run manage.py register_cluster first.")
        try:
            lines = demo.seed(cluster, reset=opts["reset"])
        except demo.SeedError as e:
            raise CommandError(str(e)) from None
        for line in lines:
            self.stdout.write(line)
        if not lines:
            self.stdout.write(f"The demo on {cluster.slug} is already set up; nothing changed.")
        signup_cluster = settings.CLUSTERRA_DEMO_CLUSTER
        if signup_cluster != cluster.slug:
            # Seeding does not open the signup: the setting does, and it names one cluster.
            self.stdout.write(
                f"Note: the signup at /demo/ uses CLUSTERRA_DEMO_CLUSTER={signup_cluster!r}; "
                f"set it to {cluster.slug!r} to open the demo on this cluster."
            )
