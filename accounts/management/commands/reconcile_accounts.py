"""Finish or repair cluster accounts: unfinished provisioning, offboarded people not locked, open homes."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import offboarding, posix, provisioning, repairs
from accounts.models import ClusterAccount
from clusters import headnode
from clusters.models import Cluster

State = ClusterAccount.State


class Command(BaseCommand):
    help = (
        "Resume provisioning of accounts that are not ready (and not locked), lock the accounts "
        "of deactivated people that are still open, and make 0700 the homes that others can open. "
        "Prints one line per account it touched."
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
        for cluster, names in _linux_users(rows).values():
            try:
                for name in repairs.join_people_group(cluster, names, actor="reconcile_accounts"):
                    touched += 1
                    self.stdout.write(f"{name} on {cluster.slug}: joined {posix.PEOPLE_GROUP}")
            except (headnode.HeadNodeError, provisioning.ProvisioningError) as e:
                failures += 1
                self.stdout.write(f"{posix.PEOPLE_GROUP} on {cluster.slug}: not checked: {e}")
            try:
                fixes = repairs.close_open_homes(cluster, names, actor="reconcile_accounts")
            except (headnode.HeadNodeError, provisioning.ProvisioningError) as e:
                failures += 1
                self.stdout.write(f"homes on {cluster.slug}: not checked: {e}")
                continue
            for fix in fixes:
                touched += 1
                where = f"{fix.username} on {cluster.slug}"
                if fix.error:
                    failures += 1
                    self.stdout.write(f"{where}: home {fix.home} is still {fix.mode}: {fix.error}")
                else:
                    self.stdout.write(f"{where}: home {fix.home} was {fix.mode}, now 700")
        self.stdout.write(f"{touched} account(s) needed work, {failures} could not be finished.")
        if failures:
            raise CommandError(f"{failures} account(s) could not be finished; see above.")


def _linux_users(rows) -> dict[str, tuple[Cluster, set[str]]]:
    """Per cluster slug: the cluster and the names of the Linux users the console made there (locked too)."""
    found: dict[str, tuple[Cluster, set[str]]] = {}
    for row in rows.filter(user_created_at__isnull=False):
        found.setdefault(row.cluster.slug, (row.cluster, set()))[1].add(row.account.username)
    return found


def _cluster_exists(slug: str) -> bool:
    return Cluster.objects.filter(slug=slug).exists()
