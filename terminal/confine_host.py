"""The console's own host, made safe to hand people shells on: what their processes may not reach.

On a head node that hosts the console (the demo, a small site), people's shells and jobs run beside
the services that hold everything: PostgreSQL and MariaDB with trust or socket logins, Redis without a
password, slurmdbd. Three host-wide settings close them, each the plainest tool Debian has for it:

- **Loopback ports**: an nftables table matches the socket owner's UID (`meta skuid`) over the
  console's UID range and rejects every connection to this host's own addresses except the ports
  that people need (slurmctld, slurmd, slurmrestd, the console's web port). Replies to connections
  root opened to a person's process (slurmd to srun) pass as established traffic. The UID range is
  the console's own (accounts.posix), so jobs, which run under the same UIDs, are covered too.
- **Unix sockets**, which netfilter never sees: every account the console makes is in one group
  (SHELL_GROUP), and each service's socket directory carries an ACL entry giving that group nothing.
  A named-group entry wins over "other", and an unprivileged user namespace cannot drop a group
  (setgroups is denied there for exactly this reason), so neither a shell nor a job gets through.
- **Processes**: /proc is remounted with hidepid=invisible, so a person sees only their own
  processes. The console runs as root and still sees (and signals) everything.

Everything here is idempotent: `manage.py confine_shells` applies it at every demo start.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from accounts.posix import PEOPLE_GROUP

TABLE = "clusterra_shells"
# The group every account the console makes here belongs to; its only purpose is to be refused.
SHELL_GROUP = PEOPLE_GROUP
# Where the services that must not be reached keep their sockets on Debian. Missing ones are skipped.
SERVICE_SOCKET_DIRS = (
    "/run/postgresql",
    "/run/mysqld",
    "/run/redis",
    "/run/rabbitmq",
    "/run/mosquitto",
)


class HostError(Exception):
    """A host-wide setting could not be applied (the message says which, and what the tool said)."""


@dataclass(frozen=True)
class Confinement:
    uid_min: int
    uid_max: int
    open_ports: tuple[int, ...]
    socket_dirs: tuple[str, ...] = SERVICE_SOCKET_DIRS


def ruleset(c: Confinement) -> str:
    """The nftables script: replaces the console's table whole, in one transaction."""
    uids = f"{c.uid_min}-{c.uid_max}"
    ports = ", ".join(str(p) for p in sorted(set(c.open_ports)))
    allow = (
        f"        meta skuid {uids} meta l4proto {{ tcp, udp }} th dport {{ {ports} }} accept\n"
        if ports
        else ""
    )
    # `table … {}` then `delete table …` makes the delete succeed on the first run as on every later one.
    return (
        f"table inet {TABLE} {{}}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        "    chain people_to_this_host {\n"
        "        type filter hook output priority filter; policy accept;\n"
        '        oif != "lo" accept\n'
        "        ct state established,related accept\n"
        f"{allow}"
        f"        meta skuid {uids} meta l4proto tcp counter reject with tcp reset\n"
        f"        meta skuid {uids} counter reject\n"
        "    }\n"
        "}\n"
    )


def resolver_ports() -> tuple[int, ...]:
    """Port 53 when this host resolves names through a loopback resolver (systemd-resolved, dnsmasq)."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return ()
    servers = [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]
    return (53,) if any(s.startswith("127.") or s == "::1" for s in servers) else ()


def apply(c: Confinement) -> list[str]:
    """Apply all three settings; returns one line per thing done, for the command to print."""
    done = [close_ports(c)]
    done += close_sockets(c.socket_dirs)
    done.append(hide_processes())
    return done


def close_ports(c: Confinement) -> str:
    _run([_tool("nft"), "-f", "-"], stdin=ruleset(c), what="nftables")
    ports = ", ".join(str(p) for p in sorted(set(c.open_ports))) or "none"
    return f"loopback closed to UIDs {c.uid_min}-{c.uid_max} except ports {ports} (nftables table {TABLE})"


def close_sockets(dirs: tuple[str, ...]) -> list[str]:
    ensure_group()
    done = []
    for d in dirs:
        if not Path(d).is_dir():
            continue
        # The access ACL stops a person from reaching anything inside; the default ACL carries the same
        # entry onto what the service creates there later (its socket is remade on every restart).
        _run(
            [_tool("setfacl"), "-m", f"g:{SHELL_GROUP}:---", "-m", f"d:g:{SHELL_GROUP}:---", d],
            what="setfacl",
        )
        done.append(f"{d}: no access for {SHELL_GROUP}")
    return done


def ensure_group() -> None:
    """The console's people's group exists on this host (a system group; -f: a no-op when it is there)."""
    _run([_tool("groupadd"), "--system", "-f", SHELL_GROUP], what="groupadd")


def hide_processes() -> str:
    _run([_tool("mount"), "-o", "remount,hidepid=invisible", "/proc"], what="mount /proc")
    return "/proc: hidepid=invisible (people see only their own processes)"


def _tool(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        package = {"nft": "nftables", "setfacl": "acl"}.get(name, name)
        raise HostError(
            f"{name} is not installed; install Debian's {package} package (apt-get install {package})."
        )
    return found


def _run(argv: list[str], *, what: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if done.returncode != 0:
        raise HostError(f"{what} failed: {(done.stderr or done.stdout).strip() or done.returncode}")
