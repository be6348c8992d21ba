"""Finish or repair half-done cluster accounts: unfinished provisioning, offboarded people not yet locked."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import offboarding, provisioning
from accounts.models import ClusterAccount
from clusters import headnode

State = ClusterAccount.State


class Command(BaseCommand):
    help = (
        "Resume provisioning of accounts that are not ready (and not locked), and lock the accounts "
        "of deactivated people that are still open. Prints one line per account it touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("--cluster", help="Only this cluster (its slug).")

    def handle(self, *args, **opts):
        rows = ClusterAccount.objects.select_related("account__user", "cluster").order_by(
            "cluster__slug", "id"
        )
        if opts["cluster"]:
            rows = rows.filter(cluster__slug=opts["cluster"])
            if not rows.exists() and not _cluster_exists(opts["cluster"]):
                raise CommandError(f"No cluster has the slug {opts['cluster']!r}.")
        failures = touched = 0
        for row in rows.exclude(state=State.LOCKED):
            person = row.account.user
            where = f"{row.account.username} on {row.cluster.slug}"
            if person is None or not person.is_active:
                touched += 1
                try:
                    self.stdout.write(f"{where}: {offboarding.lock_on_cluster(row, by='reconcile_accounts')}")
                except (headnode.HeadNodeError, RuntimeError) as e:
                    failures += 1
                    self.stdout.write(f"{where}: still not locked: {e}")
                continue
            if row.state == State.READY:
                continue
            touched += 1
            before = row.state
            try:
                provisioning.resume(row, actor="reconcile_accounts", wait=0)
            except provisioning.ProvisioningBusy:
                self.stdout.write(f"{where}: skipped, being provisioned right now")
            except provisioning.ProvisioningError as e:
                failures += 1
                self.stdout.write(f"{where}: {before} → failed: {e.message}")
            else:
                self.stdout.write(f"{where}: {before} → ready")
        self.stdout.write(f"{touched} account(s) needed work, {failures} could not be finished.")
        if failures:
            raise CommandError(f"{failures} account(s) could not be finished; see above.")


def _cluster_exists(slug: str) -> bool:
    from clusters.models import Cluster

    return Cluster.objects.filter(slug=slug).exists()
