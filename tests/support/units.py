"""Start an installed systemd unit's own command, for machines where systemd is not PID 1 (CI here).

The deploy tests install the units for real (deploy/install.sh writes /etc/systemd/system/...), but
`systemctl start` needs a running systemd. This reads the installed unit file and its drop-ins as systemd
would, and runs exactly its ExecStartPre= and ExecStart= lines with the unit's User=, Group=, UMask=,
NoNewPrivileges=, WorkingDirectory=, Environment=, EnvironmentFile= and RuntimeDirectory=, its specifiers
(%i %I %n %N %p %P %%) filled in. What needs systemd itself is not reproduced: the sandbox (namespaces:
ProtectSystem=, PrivateTmp=, ...), cgroups, Restart=. `verify` has systemd check those files instead
(`systemd-analyze verify` runs without systemd as PID 1: it loads the units into a manager of its own).

    proc = units.start("clusterra-web@1.service", log=tmp_path / "web-1.log")
    ...
    units.stop(proc)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
# What systemd gives a system service before its own settings (systemd.exec(5), "Environment variables").
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
# Settings that are lists: each line adds, an empty assignment empties the list. The rest: the last wins.
LISTS = {"Environment", "EnvironmentFile", "ExecStartPre", "ExecStart", "ExecStartPost", "RuntimeDirectory"}


class UnitError(RuntimeError):
    """The unit cannot be read or run as written."""


@dataclass
class Unit:
    name: str  # e.g. clusterra-web@1.service
    files: list[Path]  # the unit file, then its drop-ins in the order systemd applies them
    settings: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def get(self, section: str, key: str, default: str = "") -> str:
        values = self.settings.get(section, {}).get(key, [])
        return values[-1] if values else default

    def all(self, section: str, key: str) -> list[str]:
        return self.settings.get(section, {}).get(key, [])

    @property
    def prefix(self) -> str:
        return self.name.rsplit(".", 1)[0].split("@", 1)[0]

    @property
    def instance(self) -> str:
        stem = self.name.rsplit(".", 1)[0]
        return stem.split("@", 1)[1] if "@" in stem else ""

    def specifiers(self, text: str) -> str:
        """systemd's %-specifiers used in the console's units; any other one is an error, not a guess."""
        values = {
            "i": self.instance,
            "I": _unescape(self.instance),
            "n": self.name,
            "N": self.name.rsplit(".", 1)[0],
            "p": self.prefix,
            "P": _unescape(self.prefix),
            "%": "%",
        }
        out, i = [], 0
        while i < len(text):
            if text[i] == "%":
                if i + 1 >= len(text) or text[i + 1] not in values:
                    raise UnitError(f"{self.name}: specifier {text[i : i + 2]!r} is not supported here")
                out.append(values[text[i + 1]])
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def _unescape(text: str) -> str:
    return bytes(text.replace("-", "/"), "ascii").decode("unicode_escape")


def read(name: str, unit_dir: Path = UNIT_DIR) -> Unit:
    """The unit as systemd loads it: its file (a template's, for an instance), then the drop-ins."""
    base, _, kind = name.rpartition(".")
    template = f"{base.split('@', 1)[0]}@.{kind}" if "@" in base else name
    path = unit_dir / name
    if not path.exists():
        path = unit_dir / template
    if not path.exists():
        raise UnitError(f"{name} is not installed in {unit_dir}")
    # Drop-in folders, most general first: the type's ("service.d"), each dash prefix's
    # ("clusterra-.service.d", systemd 246+), the template's, the unit's own. Files are applied in the order
    # of their names; a file of the same name in a more specific folder replaces the general one.
    folders = [f"{kind}.d"]
    parts = base.split("@", 1)[0].split("-")
    folders += [f"{'-'.join(parts[:n])}-.{kind}.d" for n in range(1, len(parts))]
    folders += [f"{template}.d", f"{name}.d"] if template != name else [f"{name}.d"]
    dropins: dict[str, Path] = {}
    for folder in folders:
        for conf in sorted((unit_dir / folder).glob("*.conf")):
            dropins[conf.name] = conf
    unit = Unit(name=name, files=[path] + [dropins[k] for k in sorted(dropins)])
    for file in unit.files:
        _parse_into(unit.settings, file)
    return unit


def _parse_into(settings: dict[str, dict[str, list[str]]], path: Path) -> None:
    section = ""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):  # a continued line
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UnitError(f"{path}: not a setting: {line!r}")
        key, value = key.strip(), value.strip()
        values = settings.setdefault(section, {}).setdefault(key, [])
        if key in LISTS:
            if value:
                values.append(value)
            else:
                values.clear()
        else:
            values[:] = [value]


def environment_file(path: Path) -> dict[str, str]:
    """NAME=VALUE lines as EnvironmentFile= reads them: comments (# ;), quoted values, no expansion."""
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[name.strip()] = value
    return found


def _environment(unit: Unit, account: pwd.struct_passwd | None) -> dict[str, str]:
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
    if account is not None:
        env |= {"HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name}
        env["SHELL"] = account.pw_shell
    for line in unit.all("Service", "Environment"):
        for word in shlex.split(unit.specifiers(line)):
            name, _, value = word.partition("=")
            env[name] = value
    # Files come after Environment= and win over it (systemd.exec(5)).
    for entry in unit.all("Service", "EnvironmentFile"):
        optional = entry.startswith("-")
        path = Path(unit.specifiers(entry.lstrip("-")))
        if not path.exists():
            if optional:
                continue
            raise UnitError(f"{unit.name}: EnvironmentFile {path} is missing")
        env |= environment_file(path)
    return env


def _command(unit: Unit, line: str) -> tuple[list[str], bool]:
    """The argv of an Exec*= line, and whether a failure is ignored (its "-" prefix)."""
    ignore = False
    while line and line[0] in "-@:+!":
        if line[0] != "-":
            raise UnitError(f"{unit.name}: the Exec prefix {line[0]!r} is not supported here")
        ignore, line = True, line[1:]
    if "$" in line:
        raise UnitError(f"{unit.name}: variable expansion in Exec lines is not supported here: {line!r}")
    argv = [unit.specifiers(word) for word in shlex.split(line)]
    if not argv or not argv[0].startswith("/"):
        raise UnitError(f"{unit.name}: an Exec line must start with an absolute path: {line!r}")
    return argv, ignore


def _prepared(unit: Unit) -> tuple[list[str], dict[str, str], str, int]:
    """(the setpriv prefix, the environment, the working folder, the umask) the unit's commands run with."""
    user = unit.get("Service", "User", "root")
    group = unit.get("Service", "Group", "")
    account = pwd.getpwnam(user)
    prefix: list[str] = []
    if user != "root" or group not in ("", "root"):
        prefix = ["setpriv", f"--reuid={user}", f"--regid={group or account.pw_gid}", "--init-groups"]
    if unit.get("Service", "NoNewPrivileges", "no") in ("yes", "true", "1", "on"):
        prefix = (prefix or ["setpriv"]) + ["--no-new-privs"]
    if prefix:
        prefix.append("--")
    workdir = unit.specifiers(unit.get("Service", "WorkingDirectory", "/")).lstrip("-")
    if workdir == "~":
        workdir = account.pw_dir
    mask = int(unit.get("Service", "UMask", "0022"), 8)
    for entry in unit.all("Service", "RuntimeDirectory"):
        for name in unit.specifiers(entry).split():
            folder = Path("/run") / name
            folder.mkdir(mode=int(unit.get("Service", "RuntimeDirectoryMode", "0755"), 8), exist_ok=True)
            os.chown(folder, account.pw_uid, account.pw_gid)
    return prefix, _environment(unit, account), workdir, mask


def _popen(argv: list[str], env: dict[str, str], cwd: str, mask: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own session, as systemd gives each service, so that stop() reaches its whole process group.
        start_new_session=True,
        umask=mask,
    )


def start(name: str, *, log: Path, unit_dir: Path = UNIT_DIR) -> subprocess.Popen:
    """Run the unit's ExecStartPre= lines, then start its ExecStart= (one, as Type=simple has)."""
    unit = read(name, unit_dir)
    starts = unit.all("Service", "ExecStart")
    if len(starts) != 1:
        raise UnitError(f"{name}: a long-running unit has one ExecStart=, not {len(starts)}")
    prefix, env, cwd, mask = _prepared(unit)
    with open(log, "ab") as out:
        for line in unit.all("Service", "ExecStartPre"):
            argv, ignore = _command(unit, line)
            code = _popen(prefix + argv, env, cwd, mask, out).wait(60)
            if code and not ignore:
                raise UnitError(f"{name}: ExecStartPre {argv} exited {code}; see {log}")
        argv, _ = _command(unit, starts[0])
        return _popen(prefix + argv, env, cwd, mask, out)


def run(name: str, *, log: Path, timeout: float = 60, unit_dir: Path = UNIT_DIR) -> int:
    """A Type=oneshot unit: each ExecStartPre= and ExecStart= in turn; the first failure's exit code, or 0."""
    unit = read(name, unit_dir)
    if unit.get("Service", "Type") != "oneshot":
        raise UnitError(f"{name} is not Type=oneshot: start() it")
    prefix, env, cwd, mask = _prepared(unit)
    with open(log, "ab") as out:
        for line in unit.all("Service", "ExecStartPre") + unit.all("Service", "ExecStart"):
            argv, ignore = _command(unit, line)
            code = _popen(prefix + argv, env, cwd, mask, out).wait(timeout)
            if code and not ignore:
                return code
    return 0


def stop(proc: subprocess.Popen, *, name: str = "", unit_dir: Path = UNIT_DIR, timeout: float = 15) -> int:
    """The unit's KillSignal= (SIGTERM by default) to the process; SIGKILL to its group after `timeout`."""
    sig = signal.SIGTERM
    if name:
        sig = signal.Signals[read(name, unit_dir).get("Service", "KillSignal", "SIGTERM")]
    if proc.poll() is None:
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout)


def verify(names: list[str], unit_dir: Path = UNIT_DIR) -> str:
    """`systemd-analyze verify` on installed units (instances by name); raises with its complaints.

    It exits 0 on some problems it only prints (a timer whose service it refuses), so any output counts.
    """
    started = time.monotonic()
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(unit_dir / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = (done.stdout + done.stderr).strip()
    if done.returncode or said:
        raise UnitError(f"systemd-analyze verify exited {done.returncode}: {said}")
    return f"{len(names)} units verified by systemd-analyze in {(time.monotonic() - started) * 1000:.0f} ms"
