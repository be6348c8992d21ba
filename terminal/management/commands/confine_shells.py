"""`manage.py confine_shells`: close this host's services to people's shells and jobs.

What it sets and why: terminal.confine_host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from accounts.posix import uid_range
from clusters.models import Cluster
from terminal import confine_host

# What a person's shell needs on this host: slurmctld for sbatch/squeue/scancel, slurmd for srun's steps.
SLURM_DEFAULT_PORTS = {"SlurmctldPort": 6817, "SlurmdPort": 6818}


class Command(BaseCommand):
    help = (
        "Close this host's loopback services and service sockets to the console's UID range, and hide "
        "other people's processes. Run as root on a head node that hosts the console (make demo does)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--open-port",
            type=int,
            action="append",
            default=[],
            help="Another loopback port people may reach (the console's web port, say). Repeatable.",
        )
        parser.add_argument(
            "--socket-dir",
            action="append",
            default=[],
            help="Another directory of service sockets to close to people. Repeatable.",
        )

    def handle(self, *args, **options) -> None:
        low, high = uid_range()
        ports = set(options["open_port"]) | set(slurm_ports()) | set(confine_host.resolver_ports())
        for cluster in Cluster.objects.filter(transport=Cluster.Transport.LOCAL):
            # slurmrestd on this host: people's own tools (and the CLI run in a shell) may call it.
            url = urlsplit(cluster.slurmrestd_url)
            if url.hostname in ("127.0.0.1", "localhost", "::1") and url.port:
                ports.add(url.port)
            # A Slurm of its own beside the host's (make demo SLURM_RELEASE=26.05: a chroot on other ports):
            # people's jobs there call its slurmctld and slurmd too (srun in a batch script).
            if cluster.slurm_bin:
                ports.update(slurm_ports(f"{cluster.slurm_bin.rstrip('/')}/scontrol"))
        bad = sorted(p for p in ports if not 0 < p < 65536)
        if bad:
            raise CommandError(f"not a port: {bad[0]}")
        confinement = confine_host.Confinement(
            uid_min=low,
            uid_max=high,
            open_ports=tuple(sorted(ports)),
            socket_dirs=confine_host.SERVICE_SOCKET_DIRS + tuple(options["socket_dir"]),
        )
        try:
            for line in confine_host.apply(confinement):
                self.stdout.write(f"confine_shells: {line}")
        except confine_host.HostError as exc:
            raise CommandError(str(exc)) from exc


def slurm_ports(command: str = "scontrol") -> list[int]:
    """slurmctld's and slurmd's ports as this Slurm's `command` says (its defaults without scontrol)."""
    scontrol = shutil.which(command)
    out = ""
    if scontrol:
        argv = [scontrol, "show", "config"]
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout  # noqa: S603 - fixed argv
    ports: set[int] = set()
    for key, default in SLURM_DEFAULT_PORTS.items():
        # "SlurmctldPort = 6817", or a range "6817-6820" when slurmctld listens on several.
        m = re.search(rf"^{key}\s*=\s*(\d+)(?:-(\d+))?", out, re.MULTILINE)
        first, last = (int(m[1]), int(m[2] or m[1])) if m else (default, default)
        ports.update(range(first, last + 1))
    return sorted(ports)
