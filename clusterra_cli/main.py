"""Entry point of the `clusterra` command."""

from __future__ import annotations

import argparse
import os
import sys

import requests

from clusterra_cli import __version__

DEFAULT_URL = "http://127.0.0.1:8000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clusterra", description="Use a Slurm cluster through the Clusterra console."
    )
    parser.add_argument("--version", action="version", version=f"clusterra {__version__}")
    parser.add_argument(
        "--url",
        default=os.environ.get("CLUSTERRA_URL", DEFAULT_URL),
        help=f"the console's address (env CLUSTERRA_URL, default {DEFAULT_URL})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("health", help="is the console up, and does each cluster answer?")
    args = parser.parse_args(argv)
    return health(args.url)


def health(url: str) -> int:
    try:
        answer = requests.get(f"{url.rstrip('/')}/healthz", timeout=30)
        body = answer.json()
    except requests.RequestException as e:
        print(f"clusterra: the console at {url} does not answer: {e}", file=sys.stderr)
        return 2
    except ValueError:
        print(
            f"clusterra: {url} answered, but not like a Clusterra console (HTTP {answer.status_code}).",
            file=sys.stderr,
        )
        return 2
    db = body.get("database", {})
    print(
        f"console  {'ok' if body.get('ok') else 'DOWN'}  (database: {db.get('vendor', db.get('error', '?'))})"
    )
    for slug, state in sorted(body.get("clusters", {}).items()):
        print(f"{slug:<8} {'ok' if state.get('ok') else 'DOWN'}  {state.get('detail', '')}")
    return 0 if body.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
