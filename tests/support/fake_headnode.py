"""Test helpers for accounts: a pretend head node that answers like the real tools; real-user clean-up."""

from __future__ import annotations

import contextlib
import grp
import pwd
import random
import secrets
import subprocess
import time
from dataclasses import dataclass, field

from clusters.headnode import HeadNodeError, Result
from tests.support import slurm_commands

TEST_UIDS = range(60000, 61000)


@dataclass
class FakeHeadNode:
    """passwd, group and sacctmgr state of one pretend head node; records every argv it is asked to run.

    `down` makes every call fail as an unreachable head node; `broken` maps a program
    to the Result it returns once; `slow` sleeps in useradd (for concurrency tests).
    """

    passwd: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    homes: dict[str, str] = field(default_factory=dict)
    # Mode of each home folder by path, as useradd (with its -K UMASK) and chmod leave it.
    modes: dict[str, int] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=lambda: {"demo"})
    associations: set[tuple[str, str]] = field(default_factory=set)
    locked: set[str] = field(default_factory=set)
    # Supplementary group → member names (usermod -a -G).
    members: dict[str, set[str]] = field(default_factory=dict)
    # Users whose associations take no new job (MaxSubmitJobs=0), and processes running per UID.
    blocked: set[str] = field(default_factory=set)
    # Slurm users made outside the console: name → (AdminLevel, accounts they coordinate).
    slurm_users: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Slurm users by the UID Slurm keeps for them, their Linux user gone or not: Slurm 24.11 and later
    # add no other name with one of these UIDs.
    slurm_uids: dict[str, int] = field(default_factory=dict)
    processes: dict[int, int] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    broken: dict[str, Result] = field(default_factory=dict)
    down: bool = False
    slow: float = 0.0
    slurm_cluster: str = "demo"

    def __call__(self, cluster, argv, *, timeout=None, input=None) -> Result:
        self.calls.append(list(argv))
        if self.down:
            raise HeadNodeError(cluster, "connection refused")
        program, args = argv[0], argv[1:]
        if program in self.broken:
            return self.broken.pop(program)
        return getattr(self, f"_{program}")(args)

    def programs(self) -> list[str]:
        return [" ".join(c[:2]) if c[0] in ("getent", "sacctmgr", "scontrol") else c[0] for c in self.calls]

    def _getent(self, args):
        database, keys = args[0], args[1:]
        table = self.passwd if database == "passwd" else self.groups
        lines = []
        for key in keys:
            for name, number in table.items():
                if key in (name, str(number)):
                    lines.append(
                        f"{name}:x:{number}:{number}::/home/{name}:/bin/bash"
                        if database == "passwd"
                        else f"{name}:x:{number}:{','.join(sorted(self.members.get(name, ())))}"
                    )
                    break
        found_all = len(lines) == len(keys)
        return Result(0 if found_all else 2, "".join(line + "\n" for line in lines), "")

    def _groupadd(self, args):
        if args[:2] == ["--system", "-f"]:  # a system group, made if missing (posix.PEOPLE_GROUP)
            self.groups.setdefault(args[2], 999)
            return Result(0, "", "")
        gid, name = int(args[1]), args[2]
        if name in self.groups:
            return Result(9, "", f"groupadd: group '{name}' already exists")
        if gid in self.groups.values():
            return Result(4, "", f"groupadd: GID '{gid}' already exists")
        self.groups[name] = gid
        return Result(0, "", "")

    def _useradd(self, args):
        options, rest = {}, list(args[:-1])
        while rest:
            flag = rest.pop(0)
            options[flag] = rest.pop(0) if flag in ("-u", "-g", "-d", "-s", "-K") else True
        name, uid = args[-1], int(options["-u"])
        if self.slow:
            time.sleep(self.slow)
        if name in self.passwd:
            return Result(9, "", f"useradd: user '{name}' already exists")
        if uid in self.passwd.values():
            return Result(4, "", "useradd: UID already in use")
        self.passwd[name] = uid
        self.homes[name] = options["-d"]
        umask = int(options["-K"].removeprefix("UMASK="), 8) if "-K" in options else 0o022
        self.modes[options["-d"]] = 0o777 & ~umask
        return Result(0, "", "")

    def _chmod(self, args):
        mode, dashes, path = args
        assert dashes == "--", args
        self.modes[path] = int(mode, 8)
        return Result(0, "", "")

    def _find(self, args):
        # Only repairs.close_open_homes' question: the folders right under the root that group or
        # others may open, as "<mode> <name>" lines.
        root = args[1]
        lines = [
            f"{mode:o} {path.rsplit('/', 1)[1]}\n"
            for path, mode in self.modes.items()
            if path.rsplit("/", 1)[0] == root and mode & 0o077
        ]
        return Result(0, "".join(lines), "")

    def _scontrol(self, args):
        if args == ["show", "config"]:
            return Result(
                0,
                "Configuration data as of 2026-11-22T08:00:00\n"
                f"ClusterName             = {self.slurm_cluster}\n",
                "",
            )
        if args == ["show", "assoc_mgr", "flags=users"]:
            users = "".join(f"UserName={n}({uid}) DefAccount=demo\n" for n, uid in self.slurm_uids.items())
            return Result(0, f"Current Association Manager state\n\nUser Records\n\n{users}", "")
        raise AssertionError(f"unexpected scontrol call {args}")

    def _sacctmgr(self, args):
        if args[:4] == ["-n", "-P", "show", "user"]:
            name = args[4].split("=", 1)[1]
            if name in self.slurm_users:
                admin, coordinated = self.slurm_users[name]
                return Result(0, f"{name}|{admin}|{coordinated}\n", "")
            known = any(u == name for u, _ in self.associations)
            return Result(0, f"{name}|None|\n" if known else "", "")
        if args[:4] == ["-n", "-P", "show", "assoc"]:
            wanted = dict(a.split("=", 1) for a in args[4:7])
            assert wanted["cluster"] == self.slurm_cluster, (
                f"association asked on cluster {wanted['cluster']}"
            )
            rows = [u for u, a in self.associations if u == wanted["user"] and a == wanted["account"]]
            return Result(0, "".join(r + "\n" for r in rows), "")
        if args[:3] == ["-i", "add", "user"]:
            name, account = args[3], args[4].split("=", 1)[1]
            assert args[5] == f"cluster={self.slurm_cluster}", (
                f"association added without this cluster: {args}"
            )
            if account not in self.accounts:
                return Result(1, f" This account '{account}' doesn't exist.\n", "")
            if (name, account) in self.associations:
                return Result(1, " Nothing new added.\n", "")
            if any(other != name and uid == self.passwd.get(name) for other, uid in self.slurm_uids.items()):
                return Result(
                    1,
                    "Request didn't affect anything\n Nothing added.\n Make sure the accounts requested here "
                    "have been added to the system/cluster. (sacctmgr add account...)\n",
                    "",
                )
            self.associations.add((name, account))
            return Result(0, " Adding User(s)\n", "")
        if args[:4] == ["-i", "modify", "user", "where"] and args[-2:] == ["set", "MaxSubmitJobs=0"]:
            where = dict(a.split("=", 1) for a in args[4:-2])
            assert where["cluster"] == self.slurm_cluster, f"blocked on cluster {where['cluster']}"
            if not any(u == where["name"] for u, _ in self.associations) or where["name"] in self.blocked:
                return Result(1, " Nothing modified\n", "")
            self.blocked.add(where["name"])
            return Result(0, " Modified user associations...\n", "")
        raise AssertionError(f"unexpected sacctmgr call {args}")

    def _pkill(self, args):
        assert args[:2] == ["-KILL", "-U"], args
        killed = self.processes.pop(int(args[2]), 0)
        return Result(0 if killed else 1, "", "")

    def _pgrep(self, args):
        assert args[0] == "-U", args
        assert args[2:4] == ["-r", "D,R,S,T,t,W,P,I"], args
        count = self.processes.get(int(args[1]), 0)
        return Result(0 if count else 1, "".join(f"{4000 + n}\n" for n in range(count)), "")

    def _usermod(self, args):
        name = args[-1]
        if name not in self.passwd:
            return Result(6, "", f"usermod: user '{name}' does not exist")
        if args[:2] == ["-a", "-G"]:
            self.members.setdefault(args[2], set()).add(name)
        else:
            self.locked.add(name)
        return Result(0, "", "")


# --- real Linux users on this machine -----------------------------------------------------------


def free_uid_block(size: int = 20) -> int:
    """The first number of `size` consecutive UIDs (and GIDs) in the test range that nobody holds here.

    A block this process handed out before comes last: a test's Linux users are gone at its end, but
    Slurm may still hold their jobs (cancelled, completing) or the plugin its note of jobs it just
    accepted for those UIDs, which the next test's person would otherwise inherit as their own use.
    """
    starts = list(range(TEST_UIDS.start, TEST_UIDS.stop - size, size))
    random.shuffle(starts)
    starts.sort(key=lambda start: start in _handed_out)
    held = _held_by_slurm()
    for start in starts:
        if all(not _uid_used(n) and n not in held for n in range(start, start + size)):
            _handed_out.add(start)
            return start
    raise RuntimeError(f"no {size} free UIDs left in {TEST_UIDS}")


_handed_out: set[int] = set()
_slurm_held: set[int] | None = None


def _held_by_slurm() -> set[int]:
    """UIDs a Slurm user left by an earlier run still holds (slurm_commands.uids_slurm_holds), read once.

    Once is enough: the users this process makes are removed from every release's Slurm with their
    Linux user (remove_linux_user), so their UIDs are free again.
    """
    global _slurm_held
    if _slurm_held is None:
        _slurm_held = slurm_commands.uids_slurm_holds()
    return _slurm_held


def _uid_used(number: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(number)
        except KeyError:
            continue
        return True
    return False


def ct_email() -> str:
    """An address whose local part makes a name no real account has ("ct" and random hex)."""
    return f"ct{secrets.token_hex(4)}@clusterra.test"


def remove_linux_user(name: str) -> None:
    """Undo what provisioning did on this machine: jobs, Slurm association, user, home and group."""
    if not name.startswith("ct"):
        raise ValueError(f"refusing to remove {name!r}: tests only remove ct… users")
    quiet = {"capture_output": True, "check": False}
    # The person may have jobs and an association on each Slurm release of this machine.
    slurm_commands.on_every_release("scancel", "-u", name)
    # userdel refuses while a job step of the user still runs.
    for _ in range(50):
        if not subprocess.run(["pgrep", "-u", name], **quiet).stdout.strip():
            break
        time.sleep(0.1)
    slurm_commands.on_every_release("sacctmgr", "-i", "delete", "user", f"name={name}")
    subprocess.run(["userdel", "-r", name], **quiet)
    with contextlib.suppress(KeyError):
        grp.getgrnam(name)
        subprocess.run(["groupdel", name], **quiet)
