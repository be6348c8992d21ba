"""`manage.py keep_shells`: hold the console's terminal shells in a process of their own (terminal.keeper)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from terminal import keeper


class Command(BaseCommand):
    help = (
        "Hold every terminal's shell so that it outlives the web worker that opened it; the workers reach "
        "it through a UNIX socket (CLUSTERRA_SHELL_KEEPER). Runs until SIGTERM, which ends the shells."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--socket",
            default="",
            help="Where to listen (default: CLUSTERRA_SHELL_KEEPER). Its directory must be the keeper "
            "user's own, mode 700; it is made if missing.",
        )

    def handle(self, *args, **options) -> None:
        path = options["socket"] or settings.CLUSTERRA_SHELL_KEEPER
        if not path:
            raise CommandError(
                "No socket to listen on: give --socket or set CLUSTERRA_SHELL_KEEPER "
                "(production: /run/clusterra-shells/keeper.sock)."
            )
        try:
            asyncio.run(keeper.serve(Path(path), announce=self._say))
        except keeper.KeeperError as exc:
            raise CommandError(str(exc)) from None

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
