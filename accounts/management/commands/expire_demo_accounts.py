"""End demo memberships past their date: offboard the demo's own accounts, others just leave the demo."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.demo import membership

BY = "manage.py expire_demo_accounts"


class Command(BaseCommand):
    help = (
        "Offboard every e-mail demo account past CLUSTERRA_DEMO_DAYS (like manage.py offboard) and take "
        "other accounts out of the demo group; forget old sign-in links. Safe to run again; run it from "
        "cron, or with --every."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every",
            type=float,
            default=0,
            metavar="SECONDS",
            help="Keep running, once every SECONDS (what `make demo` does); Ctrl-C stops.",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        every = opts["every"]
        if every < 0:
            raise CommandError("--every must be a number of seconds, more than 0.")
        if not every:
            if not self._round():
                raise CommandError(
                    "Some clean-up failed; the people are deactivated. Run manage.py reconcile_accounts "
                    "once the clusters are reachable."
                )
            return
        try:
            while True:
                self._round()
                time.sleep(every)
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")

    def _round(self) -> bool:
        ended = membership.expire_due(by=BY)
        ok = True
        for expiry in ended:
            name = expiry.member.user.get_username()
            self.stdout.write(f"{name}: {expiry.member.get_ended_how_display().lower()}")
            for problem in expiry.problems:
                ok = False
                self.stdout.write(f"  NOT done: {problem}")
        pruned = membership.prune_links()
        if ended or pruned:
            self.stdout.write(f"{len(ended)} demo membership(s) ended, {pruned} old link(s) forgotten.")
        return ok
