"""`python -m tests.support.keeper_minute SECONDS manage.py ARGS...`: a command with a shorter minute.

terminal.live counts its idle and maximum lengths in minutes of terminal.live.MINUTE seconds; in a keeper
run this way a minute lasts SECONDS, so its limits fire within a test. Nothing else differs.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    minute, argv = float(sys.argv[1]), sys.argv[2:]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clusterra_site.settings")
    import django

    django.setup()
    from django.core.management import execute_from_command_line

    from terminal import live

    live.MINUTE = minute
    execute_from_command_line(argv)


if __name__ == "__main__":
    main()
