"""`manage.py export_audit`: the audit log as JSON lines, to a file, standard output or an S3 bucket."""

from __future__ import annotations

import io
import sys
import tempfile
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit import export
from audit.log import record


class Command(BaseCommand):
    help = (
        "Write audit events as JSON lines (one event per line, oldest first) to a file, to standard "
        "output (--output -) or to an S3 bucket. The interval is since <= time < until."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", required=True, help="A duration ago (7d, 12h, 30m, 2w) or an ISO date/time."
        )
        parser.add_argument("--until", help="Same forms as --since; default: now.")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--output", metavar="FILE", help="A file to write, or - for standard output.")
        where.add_argument(
            "--s3",
            metavar="S3_URL",
            help="s3://bucket/prefix: one object per export, named by its interval.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        try:
            since = export.parse_moment(options["since"], now)
            until = export.parse_moment(options["until"], now) if options["until"] else now
        except ValueError as e:
            raise CommandError(str(e)) from None
        if since >= until:
            raise CommandError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()}).")
        events = export.events_between(since, until).iterator(chunk_size=2000)

        if options["s3"]:
            destination, count = self._to_s3(options["s3"], since, until, events)
        elif options["output"] == "-":
            destination, count = "standard output", export.write_lines(events, sys.stdout)
        else:
            destination = options["output"]
            try:
                with open(destination, "w", encoding="utf-8") as out:
                    count = export.write_lines(events, out)
            except OSError as e:
                raise CommandError(f"Cannot write {destination}: {e.strerror}.") from None

        summary = (
            f"Exported {count} audit events from {since.isoformat()} to {until.isoformat()} to {destination}."
        )
        record(
            "audit.exported",
            actor="manage.py export_audit",
            target=destination,
            message=summary,
            details={"count": count, "since": since.isoformat(), "until": until.isoformat()},
        )
        if options["output"] != "-":
            self.stdout.write(summary)

    def _to_s3(self, url: str, since: Any, until: Any, events: Any) -> tuple[str, int]:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            bucket, prefix = export.s3_location(url)
        except ValueError as e:
            raise CommandError(str(e)) from None
        key = export.object_key(prefix, since, until)
        # Spooled: a small export stays in memory, a large one goes to disk, never all in RAM.
        with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            count = export.write_lines(events, text)
            text.detach()  # flushes, and leaves the file to the upload
            raw.seek(0)
            try:
                boto3.client("s3").upload_fileobj(
                    raw, bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"}
                )
            except (BotoCoreError, ClientError) as e:
                raise CommandError(f"Cannot upload to s3://{bucket}/{key}: {e}") from None
        return f"s3://{bucket}/{key}", count
