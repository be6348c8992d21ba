"""Register (or update) a cluster from the command line, e.g. the local demo cluster."""

from __future__ import annotations

import shlex
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from clusters import discovery, probe, tokens
from clusters.models import Cluster


class Command(BaseCommand):
    help = "Create or update a cluster in the registry (idempotent), then test the connection."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", help="Display name (default: the slug).")
        parser.add_argument(
            "--slurm-env",
            type=Path,
            metavar="FILE",
            help="The settings scripts/slurm-up.sh writes for clients (/run/slurm-demo[-RELEASE]/env): "
            "the slurmrestd URL, API version, JWT key file, accounting, commands folder, policy file and "
            "refusal log come from it unless given below.",
        )
        parser.add_argument("--url", help="slurmrestd base URL (required without --slurm-env).")
        parser.add_argument("--api-version", help="e.g. v0.0.38; empty = auto-detect.")
        parser.add_argument("--key-file", help="HS256 key file (slurm.conf jwt_key).")
        parser.add_argument("--key-env", help="Environment variable holding the key, base64.")
        parser.add_argument("--transport", choices=["local", "ssm"], default="local")
        parser.add_argument("--no-accounting", action="store_true")
        parser.add_argument("--slurm-bin", help="Folder of the head node's Slurm commands; empty = the PATH.")
        parser.add_argument("--policy-path", help="Where the job_submit plugin reads the policy snapshot.")
        parser.add_argument("--refusal-log", help="Where the job_submit plugin writes its refusals.")
        parser.add_argument("--account", default="demo", help="Slurm account for new associations.")
        parser.add_argument("--script-roots", default="/home", help="Comma-separated allowed script roots.")
        parser.add_argument("--no-check", action="store_true", help="Do not contact slurmrestd.")
        parser.add_argument("--key-secret", help="AWS Secrets Manager secret (name or ARN) holding the key.")
        found = parser.add_mutually_exclusive_group()
        found.add_argument(
            "--from-pcs",
            metavar="CLUSTER_ID",
            help="Find the slurmrestd endpoint, the JWT key's secret and the login node (reached by SSM) "
            "of this AWS PCS cluster; options given here win over what is found.",
        )
        found.add_argument(
            "--from-parallelcluster",
            metavar="NAME",
            help="Find the head node (reached through SSM) of this ParallelCluster cluster; slurmrestd is "
            "expected on it at port 6820 unless --url says otherwise.",
        )
        parser.add_argument(
            "--aws-region", help="The cluster's AWS region (default: boto3's, e.g. AWS_REGION)."
        )
        parser.add_argument("--pcs-login-group", default="", help="The PCS login node group (name or id).")
        parser.add_argument(
            "--ssm-instance-id", help="The head node's instance, when discovery finds several."
        )
        parser.add_argument(
            "--enforce-policy",
            action="store_true",
            help="Slurm enforces the console's policy: the head node has the job_submit plugin (README).",
        )

    def handle(self, *args, **opts):
        if opts["slurm_env"] is not None:
            _fill_from_slurm_env(opts, opts["slurm_env"])
        # Asked of AWS before anything is written: a discovery that fails registers nothing.
        found = _discover(opts)
        if found is not None:
            self.stdout.write(f"Found {found.source}.")
            opts["url"] = opts["url"] or found.slurmrestd_url
            if found.jwt_secret_arn and not (opts["key_file"] or opts["key_env"] or opts["key_secret"]):
                opts["key_secret"] = found.jwt_secret_arn
        if not opts["url"]:
            raise CommandError("Give --url (slurmrestd's address) or --slurm-env with a SLURMRESTD_URL line.")
        keys = [("file", opts["key_file"]), ("env", opts["key_env"]), ("aws_secret", opts["key_secret"])]
        given = [(source, ref) for source, ref in keys if ref]
        if len(given) != 1:
            raise CommandError("Give exactly one of --key-file, --key-env or --key-secret.")
        source, ref = given[0]
        cluster = Cluster.objects.filter(slug=opts["slug"]).first() or Cluster(slug=opts["slug"])
        cluster.name = opts["name"] or cluster.name or opts["slug"]
        cluster.slurmrestd_url = opts["url"]
        cluster.api_version = opts["api_version"] or ""
        cluster.jwt_key_source, cluster.jwt_key_ref = source, ref
        cluster.transport = opts["transport"]
        if found is not None:
            for field, value in found.cluster_fields().items():
                if field not in ("slurmrestd_url", "jwt_key_source", "jwt_key_ref", "slurm_bin"):
                    setattr(cluster, field, value)
            if opts["slurm_bin"] is None and found.slurm_bin:
                opts["slurm_bin"] = found.slurm_bin
        elif opts["aws_region"]:
            cluster.aws_region = opts["aws_region"]
        if opts["ssm_instance_id"]:
            cluster.ssm_instance_id = opts["ssm_instance_id"]
        cluster.has_accounting = not opts["no_accounting"]
        cluster.slurm_account = opts["account"]
        # Given (or in the settings file) they are set; left out, an existing cluster keeps its own.
        for field in ("slurm_bin", "policy_path", "refusal_log"):
            if opts[field] is not None:
                setattr(cluster, field, opts[field])
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


def _discover(opts: dict) -> discovery.Discovered | None:
    """What AWS shows of the cluster named by --from-pcs or --from-parallelcluster (None without either)."""
    if not (opts["from_pcs"] or opts["from_parallelcluster"]):
        return None
    import boto3

    region = opts["aws_region"] or boto3.session.Session().region_name
    if not region:
        raise CommandError("Give --aws-region (the cluster's AWS region).")
    instance = opts["ssm_instance_id"] or ""
    try:
        if opts["from_pcs"]:
            return discovery.from_pcs(
                opts["from_pcs"], region=region, login_group=opts["pcs_login_group"], instance_id=instance
            )
        return discovery.from_parallelcluster(
            opts["from_parallelcluster"], region=region, instance_id=instance
        )
    except discovery.DiscoveryError as e:
        raise CommandError(str(e)) from None


# The keys of scripts/slurm-up.sh's settings file, and the option each one fills when it is not given.
SLURM_ENV_KEYS = {
    "SLURMRESTD_URL": "url",
    "SLURM_API_VERSION": "api_version",
    "SLURM_JWT_KEY_FILE": "key_file",
    "SLURM_BIN": "slurm_bin",
    "SLURM_POLICY_FILE": "policy_path",
    "SLURM_REFUSAL_LOG": "refusal_log",
}


def _fill_from_slurm_env(opts: dict, path: Path) -> None:
    """Options not given on the command line, from the NAME=VALUE lines slurm-up.sh writes (shell quoting)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise CommandError(
            f"--slurm-env {path}: cannot read it ({e.strerror or e}); is that Slurm up (scripts/slurm-up.sh)?"
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError as e:
            raise CommandError(f"--slurm-env {path}, line {number}: {e}") from None
        if not sep or len(words) > 1:
            raise CommandError(f"--slurm-env {path}, line {number}: not a NAME=VALUE line: {line!r}")
        values[name.strip()] = words[0] if words else ""
    if "SLURMRESTD_URL" not in values:
        raise CommandError(f"--slurm-env {path}: it has no SLURMRESTD_URL line")
    # A key file given on the command line (or --key-env, --key-secret) wins over the file's.
    if opts["key_env"] or opts["key_secret"]:
        values.pop("SLURM_JWT_KEY_FILE", None)
    for key, option in SLURM_ENV_KEYS.items():
        if opts[option] is None and key in values:
            opts[option] = values[key]
    if values.get("SLURM_ACCOUNTING") == "0":
        opts["no_accounting"] = True
