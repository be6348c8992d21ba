"""Run the job sync loop: job states from slurmrestd into JobRecords, the usage ledger settled."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from jobs import sync, sync_lock


class Command(BaseCommand):
    help = (
        "Poll slurmrestd for every person's jobs, record their states and settle the usage ledger. "
        "Only one instance is active at a time (a database lock); others wait as standbys."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="Run one round and exit (for cron and tests)."
        )
        parser.add_argument(
            "--interval", type=float, default=10.0, help="Seconds between rounds (default 10)."
        )

    def handle(self, *args, **opts):
        if opts["interval"] <= 0:
            raise CommandError("--interval must be more than 0 seconds.")
        if not opts["once"]:
            self.stdout.write(f"Syncing jobs every {opts['interval']:g} s; Ctrl-C stops.")
            try:
                sync.run_forever(opts["interval"], stdout=self.stdout)
            except KeyboardInterrupt:
                self.stdout.write("Stopped.")
            return
        try:
            with sync_lock.single_instance():
                report = sync.sync_once()
                self.stdout.write(report.summary())
                for error in report.errors:
                    self.stderr.write(error)
                # A cluster still busy past its deadline goes on in this process: the lock is kept until it
                # ends, so that the next run cannot poll that cluster at the same time.
                sync.wait_for_rounds()
        except sync_lock.SyncLockHeld:
            # Exit 0: under cron, the loop that holds the lock is doing this round's work.
            self.stdout.write("Another sync_jobs loop holds the lock; nothing to do.")
