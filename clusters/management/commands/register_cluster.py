"""Register (or update) a cluster from the command line, e.g. the local demo cluster."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from clusters import probe, tokens
from clusters.models import Cluster


class Command(BaseCommand):
    help = "Create or update a cluster in the registry (idempotent), then test the connection."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", help="Display name (default: the slug).")
        parser.add_argument("--url", required=True, help="slurmrestd base URL.")
        parser.add_argument("--api-version", default="", help="e.g. v0.0.38; empty = auto-detect.")
        parser.add_argument("--key-file", help="HS256 key file (slurm.conf jwt_key).")
        parser.add_argument("--key-env", help="Environment variable holding the key, base64.")
        parser.add_argument("--transport", choices=["local", "ssm"], default="local")
        parser.add_argument("--no-accounting", action="store_true")
        parser.add_argument("--account", default="demo", help="Slurm account for new associations.")
        parser.add_argument("--script-roots", default="/home", help="Comma-separated allowed script roots.")
        parser.add_argument("--no-check", action="store_true", help="Do not contact slurmrestd.")
        parser.add_argument(
            "--enforce-policy",
            action="store_true",
            help="Slurm enforces the console's policy: the head node has the job_submit plugin (README).",
        )

    def handle(self, *args, **opts):
        if bool(opts["key_file"]) == bool(opts["key_env"]):
            raise CommandError("Give exactly one of --key-file or --key-env.")
        source, ref = ("file", opts["key_file"]) if opts["key_file"] else ("env", opts["key_env"])
        cluster = Cluster.objects.filter(slug=opts["slug"]).first() or Cluster(slug=opts["slug"])
        cluster.name = opts["name"] or cluster.name or opts["slug"]
        cluster.slurmrestd_url = opts["url"]
        cluster.api_version = opts["api_version"]
        cluster.jwt_key_source, cluster.jwt_key_ref = source, ref
        cluster.transport = opts["transport"]
        cluster.has_accounting = not opts["no_accounting"]
        cluster.slurm_account = opts["account"]
        if opts["enforce_policy"]:
            cluster.enforce_policy = True
        cluster.allowed_script_roots = "\n".join(
            r.strip() for r in opts["script_roots"].split(",") if r.strip()
        )
        created = cluster.pk is None
        try:
            cluster.full_clean()
        except ValidationError as e:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in e.message_dict.items())) from None
        cluster.save()
        tokens.forget(cluster)
        self.stdout.write(
            f"{'Registered' if created else 'Updated'} cluster {cluster.slug} at {cluster.slurmrestd_url}."
        )
        if cluster.enforce_policy:
            self.stdout.write(
                f"Slurm enforces the console's policy there; it is published to {cluster.policy_path}."
            )
        if not opts["no_check"]:
            result = probe.check(cluster)
            if not result.ok:
                raise CommandError(f"{cluster.slug} does not answer: {result.summary}")
            self.stdout.write(result.summary)
